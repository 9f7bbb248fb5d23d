package router

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/qx-platform/regions"
)

// Defaults of Transport.
const (
	DefaultTransportMaxBodyBytes = 10 << 20
	DefaultTransportMaxRedirects = 2
)

// Transport is an http.RoundTripper for Go clients of a routed service. It
// follows a 307 or 308 from one configured region to another itself, sending
// the same method, body and headers again, Authorization and Cookie
// included, which http.Client would not do on its own (see the package
// documentation). Any other redirect, or one that leaves the configured
// region hosts, is returned untouched for http.Client to apply its own
// policy.
//
// Following redirects in a RoundTripper is deliberately outside the usual
// contract of the interface: it is the only place where the body and the
// credentials can be kept for region hosts and for region hosts only.
//
//	client := &http.Client{Transport: &router.Transport{Regions: cfg}}
//
// A Transport is safe for concurrent use; its fields must not change after
// first use.
type Transport struct {
	// Base sends each request. Nil means http.DefaultTransport.
	Base http.RoundTripper
	// Regions lists the base URLs between which redirects are followed;
	// only their scheme and host (with the default port when none is
	// given) matter. Regions.Name is not used.
	Regions regions.Config
	// MaxBodyBytes bounds the request body kept in memory to be sent again.
	// A request whose body has no GetBody and is larger is sent once, and
	// a redirect it gets is returned untouched. Zero means
	// DefaultTransportMaxBodyBytes.
	MaxBodyBytes int64
	// MaxRedirects bounds the redirects followed for one request. Zero
	// means DefaultTransportMaxRedirects; the router's hop marker means one
	// is all a healthy deployment needs.
	MaxRedirects int
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if !t.isRegion(req.URL) {
		return base.RoundTrip(req)
	}
	first, getBody, err := t.replayable(req)
	if err != nil {
		return nil, err
	}
	maxRedirects := t.MaxRedirects
	if maxRedirects == 0 {
		maxRedirects = DefaultTransportMaxRedirects
	}
	cur := first
	resp, err := base.RoundTrip(cur)
	for i := 0; i < maxRedirects && err == nil; i++ {
		next := t.redirect(cur, resp, getBody)
		if next == nil {
			break
		}
		// Drain a little so that the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
		cur = next
		resp, err = base.RoundTrip(cur)
	}
	return resp, err
}

// replayable returns the request to send first and a function that returns
// its body again, or a nil function when the body cannot be sent twice.
func (t *Transport) replayable(req *http.Request) (*http.Request, func() (io.ReadCloser, error), error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, func() (io.ReadCloser, error) { return http.NoBody, nil }, nil
	}
	if req.GetBody != nil {
		return req, req.GetBody, nil
	}
	limit := t.MaxBodyBytes
	if limit == 0 {
		limit = DefaultTransportMaxBodyBytes
	}
	data, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		req.Body.Close()
		return nil, nil, fmt.Errorf("read request body: %w", err)
	}
	first := req.Clone(req.Context())
	if int64(len(data)) > limit {
		// Too large to keep: send what was read and the rest, once.
		first.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(data), req.Body), req.Body}
		return first, nil, nil
	}
	req.Body.Close()
	getBody := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	first.Body, _ = getBody()
	first.GetBody = getBody
	first.ContentLength = int64(len(data))
	return first, getBody, nil
}

// redirect returns the request that follows resp, or nil when resp is not a
// redirect this Transport follows.
func (t *Transport) redirect(cur *http.Request, resp *http.Response, getBody func() (io.ReadCloser, error)) *http.Request {
	if resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect {
		return nil
	}
	if getBody == nil {
		return nil
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := cur.URL.Parse(loc)
	if err != nil || !t.isRegion(u) {
		return nil
	}
	body, err := getBody()
	if err != nil {
		return nil
	}
	next := cur.Clone(cur.Context())
	next.URL = u
	next.Host = ""
	next.Body = body
	next.GetBody = getBody
	return next
}

// isRegion reports whether u has the scheme and host of a configured region.
func (t *Transport) isRegion(u *url.URL) bool {
	if u == nil || u.User != nil {
		return false
	}
	o := origin(u)
	for _, b := range t.Regions.URLs {
		if b != nil && origin(b) == o {
			return true
		}
	}
	return false
}

// origin is scheme://host:port, lower case, with the scheme's default port
// filled in.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
