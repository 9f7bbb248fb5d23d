package replication

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qx-platform/regions/internal/testenv"
)

// Target streams the replicator must refuse with ErrStreamConflict at
// start, instead of retrying "target not ready" forever or writing into
// a stream that others write to (their messages would break the
// Nats-Expected-Last-Msg-Id chain).
func TestReview_StreamConflict(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stream   jetstream.StreamConfig
		wantSays []string
	}{
		{
			name:     "another stream captures our subjects",
			stream:   jetstream.StreamConfig{Name: "ALL_EVENTS", Subjects: []string{"qx.events.>"}},
			wantSays: []string{"ALL_EVENTS", StreamSubject(source)},
		},
		{
			name:     "our stream also captures other subjects",
			stream:   jetstream.StreamConfig{Name: stream, Subjects: []string{StreamSubject(source), "orders.>"}},
			wantSays: []string{stream, "orders.>"},
		},
		{
			name:     "our stream captures a broader wildcard",
			stream:   jetstream.StreamConfig{Name: stream, Subjects: []string{StreamSubject(source), "qx.events.*"}},
			wantSays: []string{stream, "qx.events.*"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testenv.StartNATS(t, testenv.NATSOptions{})
			e := newEnv(t, pg, n)
			nc, err := nats.Connect(n.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			if _, err := js.CreateStream(context.Background(), tc.stream); err != nil {
				t.Fatal(err)
			}
			r := e.start(t, options{})
			var runErr error
			select {
			case runErr = <-r.done:
				r.done = nil
				r.nc.Close()
			case <-time.After(10 * time.Second):
				t.Fatalf("replicator still running after 10s (status %+v); want ErrStreamConflict", r.r.Status())
			}
			if !errors.Is(runErr, ErrStreamConflict) {
				t.Fatalf("Run: %v, want ErrStreamConflict", runErr)
			}
			for _, s := range tc.wantSays {
				if !strings.Contains(runErr.Error(), s) {
					t.Errorf("error %q does not name %q", runErr, s)
				}
			}
		})
	}
}

func TestStreamSubjectWithin(t *testing.T) {
	for _, tc := range []struct {
		subject string
		want    bool
	}{
		{"qx.events.us-east-1.>", true},
		{"qx.events.us-east-1.order.>", true},
		{"qx.events.us-east-1.*", true},
		{"qx.events.us-east-1.order.created", true},
		{"qx.events.us-east-1", false},
		{"qx.events.us-east-10.>", false},
		{"qx.events.*.>", false},
		{"qx.events.>", false},
		{">", false},
		{"orders.>", false},
	} {
		if got := subjectWithin(tc.subject, StreamSubject(source)); got != tc.want {
			t.Errorf("subjectWithin(%q): got %v, want %v", tc.subject, got, tc.want)
		}
	}
}
