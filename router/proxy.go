package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// Defaults of ProxyConfig.
const (
	DefaultProxyTimeout      = 30 * time.Second
	DefaultProxyMaxBodyBytes = 10 << 20
)

// ProxyConfig configures proxy mode; see WithProxy. The zero value is ready
// to use.
type ProxyConfig struct {
	// Transport sends forwarded requests to the home region. Nil means a
	// clone of http.DefaultTransport, whose dial and TLS handshake timeouts
	// apply.
	Transport http.RoundTripper
	// Timeout bounds one forwarded exchange, from sending the request to the
	// end of the response body. Zero means DefaultProxyTimeout.
	Timeout time.Duration
	// MaxBodyBytes bounds the request body that is forwarded; a larger one
	// is answered with 413. Zero means DefaultProxyMaxBodyBytes.
	MaxBodyBytes int64
}

// WithProxy turns on proxy mode: a write for a tenant homed elsewhere is
// forwarded to the home region with httputil.ReverseProxy, HopParam added to
// its query, instead of being answered with 307. It is for clients that
// cannot follow a 307 with a body. The forwarded request keeps its headers,
// Authorization included, and gets X-Forwarded-For, -Host and -Proto; its
// Host is the home region's. Errors are answered with problems: 413 for a
// body over the limit, 504 on timeout, 502 otherwise.
// It panics if a limit in cfg is negative.
func WithProxy(cfg ProxyConfig) Option {
	if cfg.Timeout < 0 || cfg.MaxBodyBytes < 0 {
		panic("router: WithProxy: negative limit")
	}
	return func(rt *Router) { rt.proxy = newProxy(rt, cfg) }
}

type proxy struct {
	rp      *httputil.ReverseProxy
	timeout time.Duration
	maxBody int64
}

func newProxy(rt *Router, cfg ProxyConfig) *proxy {
	p := &proxy{timeout: cfg.Timeout, maxBody: cfg.MaxBodyBytes}
	if p.timeout == 0 {
		p.timeout = DefaultProxyTimeout
	}
	if p.maxBody == 0 {
		p.maxBody = DefaultProxyMaxBodyBytes
	}
	tr := cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	p.rp = &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Out.URL is already the home region's URL (see serve).
			pr.SetXForwarded()
			pr.Out.Host = ""
		},
		// Libraries never log; what ReverseProxy would log after the
		// response has started cannot be answered anyway.
		ErrorLog: log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var tooLarge *http.MaxBytesError
			switch {
			case errors.As(err, &tooLarge):
				rt.writeProblem(w, r, probTooLarge,
					fmt.Sprintf("the body is over %d bytes; send it to the home region directly", tooLarge.Limit), err)
			case errors.Is(err, context.DeadlineExceeded):
				rt.writeProblem(w, r, probTimeout, "the home region did not answer in time", fmt.Errorf("forward write: %w", err))
			default:
				rt.writeProblem(w, r, probBadGateway, "the home region could not be reached", fmt.Errorf("forward write: %w", err))
			}
		},
	}
	return p
}

// serve forwards r to loc, a Location built by the middleware.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request, loc string) {
	u, err := url.Parse(loc)
	if err != nil {
		// loc was built from checked parts; this is a bug, not bad input.
		panic("router: built an unparsable location: " + err.Error())
	}
	if r.ContentLength > p.maxBody {
		p.rp.ErrorHandler(w, r, &http.MaxBytesError{Limit: p.maxBody})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.timeout)
	defer cancel()
	out := r.WithContext(ctx)
	out.URL = u
	out.RequestURI = ""
	if r.Body != nil {
		out.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
	}
	p.rp.ServeHTTP(w, out)
}
