package router_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qx-platform/regions/router"
)

func TestRouter_Middleware_proxy(t *testing.T) {
	t.Run("write is forwarded with body and credentials", func(t *testing.T) {
		d := newDeployment(t, "us", "us", router.ProxyConfig{})
		client := &http.Client{Transport: d.baseTransport(t)}
		resp, err := client.Do(post(t, "http://eu.test/orders/a%2Fb?x=1", onceReader{strings.NewReader(`{"n":3}`)}))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Served-By") != "us" {
			t.Fatalf("got %d from %q, want 201 from us", resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
		got := <-d.us.got
		want := echoed{
			method: "POST", path: "/orders/a%2Fb", rawQuery: "x=1", body: `{"n":3}`,
			auth: "Bearer s3cret", host: "us.test", forwardedFor: "127.0.0.1",
		}
		if got != want {
			t.Errorf("us handler saw %+v, want %+v", got, want)
		}
		if eu, us := d.eu.hits.Load(), d.us.hits.Load(); eu != 1 || us != 1 {
			t.Errorf("requests: eu %d, us %d; want 1 and 1", eu, us)
		}
	})

	t.Run("reads stay local", func(t *testing.T) {
		d := newDeployment(t, "us", "us", router.ProxyConfig{})
		client := &http.Client{Transport: d.baseTransport(t)}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://eu.test/orders", nil)
		req.Header.Set("X-Tenant-ID", "acme")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Served-By") != "eu" || d.us.hits.Load() != 0 {
			t.Errorf("GET served by %q, us hits %d; want eu and 0", resp.Header.Get("X-Served-By"), d.us.hits.Load())
		}
	})

	t.Run("regions that disagree answer 503 once", func(t *testing.T) {
		d := newDeployment(t, "us", "eu", router.ProxyConfig{})
		client := &http.Client{Transport: d.baseTransport(t)}
		resp, err := client.Do(post(t, "http://eu.test/orders", strings.NewReader("{}")))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if p := readProblem(t, resp, http.StatusServiceUnavailable); p.Type != "urn:qx:problem:region-conflict" {
			t.Errorf("problem type: got %q", p.Type)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		if eu, us := d.eu.hits.Load(), d.us.hits.Load(); eu != 1 || us != 1 {
			t.Errorf("requests: eu %d, us %d; want 1 and 1", eu, us)
		}
	})

	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			name   string
			cfg    router.ProxyConfig
			chunk  bool // send without Content-Length
			setup  func(d *deployment)
			status int
			typ    string
		}{
			{"body over the limit", router.ProxyConfig{MaxBodyBytes: 4}, false, nil,
				http.StatusRequestEntityTooLarge, "urn:qx:problem:body-too-large"},
			{"chunked body over the limit", router.ProxyConfig{MaxBodyBytes: 4}, true, nil,
				http.StatusRequestEntityTooLarge, "urn:qx:problem:body-too-large"},
			{"home region down", router.ProxyConfig{}, false, func(d *deployment) { d.us.srv.Close() },
				http.StatusBadGateway, "urn:qx:problem:forward-failed"},
			{"home region too slow", router.ProxyConfig{Timeout: 100 * time.Millisecond}, false,
				func(d *deployment) { d.us.stall.Store(true) },
				http.StatusGatewayTimeout, "urn:qx:problem:forward-timeout"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := newDeployment(t, "us", "us", tt.cfg)
				if tt.setup != nil {
					tt.setup(d)
				}
				client := &http.Client{Transport: d.baseTransport(t)}
				body := strings.NewReader("0123456789")
				req := post(t, "http://eu.test/orders", body)
				if tt.chunk {
					req = post(t, "http://eu.test/orders", onceReader{body})
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if p := readProblem(t, resp, tt.status); p.Type != tt.typ {
					t.Errorf("problem type: got %q, want %q", p.Type, tt.typ)
				}
			})
		}
	})
}
