package router_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/qx-platform/regions/router"
)

// stubBase answers each request from a script keyed by URL and records what
// it was sent.
type stubBase struct {
	answers map[string]*http.Response
	sent    []sentReq
}

type sentReq struct{ url, body, auth string }

func (s *stubBase) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	s.sent = append(s.sent, sentReq{req.URL.String(), string(body), req.Header.Get("Authorization")})
	a, ok := s.answers[req.URL.String()]
	if !ok {
		return nil, errors.New("stub: no answer for " + req.URL.String())
	}
	resp := *a
	resp.Request = req
	resp.Body = io.NopCloser(strings.NewReader(""))
	return &resp, nil
}

func redirectTo(status int, loc string) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{"Location": {loc}}}
}

var ok200 = &http.Response{StatusCode: 200, Header: http.Header{}}

func TestTransport_RoundTrip(t *testing.T) {
	cfg := mustConfig(t, "eu", "eu=https://eu.example.com,us=https://us.example.com:8443/api")
	tests := []struct {
		name     string
		url      string
		body     string
		maxBody  int64
		answers  map[string]*http.Response
		status   int
		wantSent []sentReq
	}{
		{
			name: "307 between regions is followed with body and credentials",
			url:  "https://eu.example.com/o", body: "payload",
			answers: map[string]*http.Response{
				"https://eu.example.com/o":                    redirectTo(307, "https://us.example.com:8443/api/o?qx_hop=eu"),
				"https://us.example.com:8443/api/o?qx_hop=eu": ok200,
			},
			status: 200,
			wantSent: []sentReq{
				{"https://eu.example.com/o", "payload", "Bearer t"},
				{"https://us.example.com:8443/api/o?qx_hop=eu", "payload", "Bearer t"},
			},
		},
		{
			name: "308 and a relative Location",
			url:  "https://eu.example.com:443/o", body: "p",
			answers: map[string]*http.Response{
				"https://eu.example.com:443/o": redirectTo(308, "/p"),
				"https://eu.example.com:443/p": ok200,
			},
			status: 200,
			wantSent: []sentReq{
				{"https://eu.example.com:443/o", "p", "Bearer t"},
				{"https://eu.example.com:443/p", "p", "Bearer t"},
			},
		},
		{
			name: "redirect off the region hosts is returned",
			url:  "https://eu.example.com/o", body: "p",
			answers: map[string]*http.Response{"https://eu.example.com/o": redirectTo(307, "https://evil.example.com/o")},
			status:  307,
			wantSent: []sentReq{
				{"https://eu.example.com/o", "p", "Bearer t"},
			},
		},
		{
			name: "same host on another scheme is not a region",
			url:  "https://eu.example.com/o", body: "p",
			answers: map[string]*http.Response{"https://eu.example.com/o": redirectTo(307, "http://us.example.com:8443/o")},
			status:  307,
			wantSent: []sentReq{
				{"https://eu.example.com/o", "p", "Bearer t"},
			},
		},
		{
			name: "302 is left to http.Client",
			url:  "https://eu.example.com/o", body: "p",
			answers: map[string]*http.Response{"https://eu.example.com/o": redirectTo(302, "https://us.example.com:8443/o")},
			status:  302,
			wantSent: []sentReq{
				{"https://eu.example.com/o", "p", "Bearer t"},
			},
		},
		{
			name: "request to a host that is not a region is passed through",
			url:  "https://other.example.com/o", body: "p",
			answers: map[string]*http.Response{"https://other.example.com/o": redirectTo(307, "https://us.example.com:8443/o")},
			status:  307,
			wantSent: []sentReq{
				{"https://other.example.com/o", "p", "Bearer t"},
			},
		},
		{
			name: "body over the limit is sent once, whole",
			url:  "https://eu.example.com/o", body: "0123456789", maxBody: 4,
			answers: map[string]*http.Response{"https://eu.example.com/o": redirectTo(307, "https://us.example.com:8443/o")},
			status:  307,
			wantSent: []sentReq{
				{"https://eu.example.com/o", "0123456789", "Bearer t"},
			},
		},
		{
			name: "redirects are bounded",
			url:  "https://eu.example.com/1", body: "p",
			answers: map[string]*http.Response{
				"https://eu.example.com/1": redirectTo(307, "/2"),
				"https://eu.example.com/2": redirectTo(307, "/3"),
				"https://eu.example.com/3": redirectTo(307, "/4"),
			},
			status: 307,
			wantSent: []sentReq{
				{"https://eu.example.com/1", "p", "Bearer t"},
				{"https://eu.example.com/2", "p", "Bearer t"},
				{"https://eu.example.com/3", "p", "Bearer t"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := &stubBase{answers: tt.answers}
			tr := &router.Transport{Base: base, Regions: cfg, MaxBodyBytes: tt.maxBody}
			req, err := http.NewRequestWithContext(t.Context(), "POST", tt.url, onceReader{strings.NewReader(tt.body)})
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer t")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tt.status)
			}
			if len(base.sent) != len(tt.wantSent) {
				t.Fatalf("sent: got %+v, want %+v", base.sent, tt.wantSent)
			}
			for i := range base.sent {
				if base.sent[i] != tt.wantSent[i] {
					t.Errorf("request %d: got %+v, want %+v", i, base.sent[i], tt.wantSent[i])
				}
			}
		})
	}
}

func TestTransport_RoundTrip_noBody(t *testing.T) {
	cfg := mustConfig(t, "eu", "eu=https://eu.example.com,us=https://us.example.com")
	base := &stubBase{answers: map[string]*http.Response{
		"https://eu.example.com/o": redirectTo(307, "https://us.example.com/o"),
		"https://us.example.com/o": ok200,
	}}
	tr := &router.Transport{Base: base, Regions: cfg}
	req, err := http.NewRequestWithContext(t.Context(), "DELETE", "https://eu.example.com/o", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(base.sent) != 2 {
		t.Errorf("got %d after %d requests, want 200 after 2", resp.StatusCode, len(base.sent))
	}
}
