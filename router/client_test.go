package router_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qx-platform/regions"
	"github.com/qx-platform/regions/router"
)

// region is one region of a two-region test deployment: a real HTTP server
// behind the router's middleware, reachable as http://<name>.test.
type region struct {
	name   string
	srv    *httptest.Server
	hits   atomic.Int64 // requests that reached the server
	served atomic.Int64 // requests that reached the handler
	stall  atomic.Bool  // the handler waits for the request to be cancelled
	got    chan echoed  // what the handler saw
}

// echoed is what a region's handler saw of a request.
type echoed struct {
	method, path, rawQuery, body, auth, host, forwardedFor string
}

// deployment is two regions, eu and us, whose routers ask their own
// resolvers, and a dialer that sends eu.test and us.test to their servers.
type deployment struct {
	eu, us *region
	cfg    regions.Config
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newDeployment starts eu and us. euHome and usHome say where each region's
// resolver thinks tenant "acme" lives. With proxy, eu runs in proxy mode.
func newDeployment(tb testing.TB, euHome, usHome string, proxy ...router.ProxyConfig) *deployment {
	tb.Helper()
	d := &deployment{cfg: mustConfig(tb, "eu", "eu=http://eu.test,us=http://us.test")}
	usCfg := d.cfg
	usCfg.Name = "us"
	var euOpts []router.Option
	for _, pc := range proxy {
		if pc.Transport == nil {
			pc.Transport = d.baseTransport(tb)
		}
		euOpts = append(euOpts, router.WithProxy(pc))
	}
	d.eu = startRegion(tb, "eu", router.New(newFake(map[string]string{"acme": euHome}), d.cfg, euOpts...))
	d.us = startRegion(tb, "us", router.New(newFake(map[string]string{"acme": usHome}), usCfg))
	addrs := map[string]string{
		"eu.test:80": d.eu.srv.Listener.Addr().String(),
		"us.test:80": d.us.srv.Listener.Addr().String(),
	}
	d.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if a, ok := addrs[addr]; ok {
			addr = a
		}
		var dl net.Dialer
		return dl.DialContext(ctx, network, addr)
	}
	return d
}

func startRegion(tb testing.TB, name string, rt *router.Router) *region {
	tb.Helper()
	r := &region{name: name, got: make(chan echoed, 10)}
	h := rt.Middleware(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.served.Add(1)
		body, _ := io.ReadAll(req.Body)
		if r.stall.Load() {
			// With the body read, the server watches the connection and
			// cancels the context when the client hangs up.
			<-req.Context().Done()
			return
		}
		r.got <- echoed{
			method: req.Method, path: req.URL.EscapedPath(), rawQuery: req.URL.RawQuery, body: string(body),
			auth: req.Header.Get("Authorization"), host: req.Host, forwardedFor: req.Header.Get("X-Forwarded-For"),
		}
		w.Header().Set("X-Served-By", name)
		w.WriteHeader(http.StatusCreated)
	}))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		h.ServeHTTP(w, req)
	}))
	tb.Cleanup(r.srv.Close)
	return r
}

// baseTransport dials the test regions by name.
func (d *deployment) baseTransport(tb testing.TB) *http.Transport {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.dial(ctx, network, addr) // d.dial is set once the servers run
	}}
	tb.Cleanup(tr.CloseIdleConnections)
	return tr
}

// onceReader is a body http.NewRequest cannot rewind, so it sets no GetBody.
type onceReader struct{ io.Reader }

func post(tb testing.TB, url string, body io.Reader) *http.Request {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), "POST", url, body)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("X-Tenant-ID", "acme")
	req.Header.Set("Authorization", "Bearer s3cret")
	return req
}

func TestRouter_Middleware_followedByClient(t *testing.T) {
	t.Run("Transport keeps body and credentials", func(t *testing.T) {
		d := newDeployment(t, "us", "us")
		client := &http.Client{Transport: &router.Transport{Base: d.baseTransport(t), Regions: d.cfg}}
		resp, err := client.Do(post(t, "http://eu.test/orders/a%2Fb?x=1", onceReader{strings.NewReader(`{"n":1}`)}))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Served-By") != "us" {
			t.Fatalf("got %d from %q, want 201 from us", resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
		got := <-d.us.got
		want := echoed{method: "POST", path: "/orders/a%2Fb", rawQuery: "x=1", body: `{"n":1}`, auth: "Bearer s3cret", host: "us.test"}
		if got != want {
			t.Errorf("us handler saw %+v, want %+v", got, want)
		}
		if n := d.eu.served.Load(); n != 0 {
			t.Errorf("eu handler served %d requests, want 0", n)
		}
	})

	t.Run("plain client with GetBody follows but drops Authorization", func(t *testing.T) {
		// This is the http.Client behaviour the package documents.
		d := newDeployment(t, "us", "us")
		client := &http.Client{Transport: d.baseTransport(t)}
		resp, err := client.Do(post(t, "http://eu.test/orders", strings.NewReader(`{"n":2}`)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("status: got %d, want 201", resp.StatusCode)
		}
		got := <-d.us.got
		if got.body != `{"n":2}` || got.auth != "" || got.rawQuery != "" {
			t.Errorf("us handler saw %+v, want the body, no Authorization and no marker", got)
		}
	})

	t.Run("plain client without GetBody stops at the 307", func(t *testing.T) {
		d := newDeployment(t, "us", "us")
		client := &http.Client{Transport: d.baseTransport(t)}
		resp, err := client.Do(post(t, "http://eu.test/orders", onceReader{strings.NewReader(`{}`)}))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("status: got %d, want 307", resp.StatusCode)
		}
		if got, want := resp.Header.Get("Location"), "http://us.test/orders?qx_hop=eu"; got != want {
			t.Errorf("Location: got %q, want %q", got, want)
		}
		if n := d.us.hits.Load(); n != 0 {
			t.Errorf("us got %d requests, want 0", n)
		}
	})
}

func TestRouter_Middleware_loopGuard(t *testing.T) {
	// eu thinks acme lives in us; us thinks it lives in eu.
	for _, tc := range []struct {
		name      string
		transport func(d *deployment, tb testing.TB) http.RoundTripper
		body      func() io.Reader
	}{
		{"router.Transport", func(d *deployment, tb testing.TB) http.RoundTripper {
			return &router.Transport{Base: d.baseTransport(tb), Regions: d.cfg, MaxRedirects: 10}
		}, func() io.Reader { return onceReader{strings.NewReader("{}")} }},
		{"http.Client", func(d *deployment, tb testing.TB) http.RoundTripper {
			return d.baseTransport(tb)
		}, func() io.Reader { return strings.NewReader("{}") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDeployment(t, "us", "eu")
			client := &http.Client{Transport: tc.transport(d, t)}
			resp, err := client.Do(post(t, "http://eu.test/orders", tc.body()))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			p := readProblem(t, resp, http.StatusServiceUnavailable)
			if p.Type != "urn:qx:problem:region-conflict" {
				t.Errorf("problem type: got %q", p.Type)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
			if got := resp.Request.URL.String(); got != "http://us.test/orders?qx_hop=eu" {
				t.Errorf("final request: got %q", got)
			}
			if eu, us := d.eu.hits.Load(), d.us.hits.Load(); eu != 1 || us != 1 {
				t.Errorf("requests: eu %d, us %d; want 1 and 1", eu, us)
			}
			if eu, us := d.eu.served.Load(), d.us.served.Load(); eu+us != 0 {
				t.Errorf("handlers served eu %d, us %d; want none", eu, us)
			}
		})
	}
}
