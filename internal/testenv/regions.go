package testenv

import (
	"sync"
	"testing"
)

// Region is one region's servers: its own Postgres cluster and NATS server.
type Region struct {
	Name string
	PG   *Postgres
	NATS *NATS
}

// StartRegions starts a Postgres cluster and an embedded NATS JetStream
// server for each named region, in parallel, all removed by tb's cleanup.
func StartRegions(tb testing.TB, names ...string) []*Region {
	tb.Helper()
	regions := make([]*Region, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &Region{Name: name}
			r.PG, errs[i] = StartPostgres(PGOptions{})
			if errs[i] != nil {
				return
			}
			r.NATS, errs[i] = NewNATS(NATSOptions{}, true)
			regions[i] = r
		}()
	}
	wg.Wait()
	tb.Cleanup(func() {
		for _, r := range regions {
			if r == nil {
				continue
			}
			if r.NATS != nil {
				r.NATS.Close()
			}
			r.PG.Close()
		}
	})
	for i, err := range errs {
		if err != nil {
			tb.Fatalf("start region %s: %v", names[i], err)
		}
	}
	return regions
}
