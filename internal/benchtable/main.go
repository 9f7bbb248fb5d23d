// Command benchtable reads `go test -bench` output on stdin and prints one
// table of every figure: per benchmark and metric, the median over the runs
// (-count) and their range. It ends with the catch-up summary line of issue
// 4, from the replication package's 200k catch-up benchmark:
//
//	catch-up: <events/s> events/s = <ratio>x min(L1, L2)
//
// It exits non-zero when the input reports a failure or lacks that
// benchmark, so `make bench` fails with it.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// catchUpBench is the benchmark the summary line is taken from.
const catchUpBench = "replication Replicator_CatchUp/backlog=200k"

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// result is every value reported for one benchmark.
type result struct {
	name   string
	units  []string             // in first-seen order
	values map[string][]float64 // unit → one value per run
	custom bool                 // reports metrics of its own: its ns/op includes setup
}

func run(in io.Reader, out io.Writer) error {
	results, failed, err := parse(in)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return errors.New("no benchmark results in the input")
	}
	rows := [][]string{{"benchmark", "metric", "median", "min", "max", "runs"}}
	for _, r := range results {
		for _, u := range r.units {
			if r.custom && u == "ns/op" {
				continue
			}
			v := slices.Sorted(slices.Values(r.values[u]))
			rows = append(rows, []string{r.name, u, format(median(v)), format(v[0]), format(v[len(v)-1]), strconv.Itoa(len(v))})
		}
	}
	fmt.Fprintln(out)
	printTable(out, rows)
	fmt.Fprintln(out)
	if len(failed) > 0 {
		return fmt.Errorf("failures in the input: %s", strings.Join(failed, "; "))
	}
	var cu *result
	for _, r := range results {
		if r.name == catchUpBench {
			cu = r
		}
	}
	if cu == nil || len(cu.values["events/s"]) == 0 || len(cu.values["x_min_L1_L2"]) == 0 {
		return fmt.Errorf("no events/s and x_min_L1_L2 from %s in the input", catchUpBench)
	}
	fmt.Fprintf(out, "catch-up: %.0f events/s = %.2fx min(L1, L2)\n",
		median(slices.Sorted(slices.Values(cu.values["events/s"]))),
		median(slices.Sorted(slices.Values(cu.values["x_min_L1_L2"]))))
	return nil
}

// parse reads benchmark lines ("BenchmarkX-2  1  123 ns/op  4.5 events/s"),
// naming each by its package's last element and the name without the
// Benchmark prefix and the GOMAXPROCS suffix, in the order first seen.
func parse(in io.Reader) ([]*result, []string, error) {
	byName := map[string]*result{}
	var order []*result
	var failed []string
	pkg := ""
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = path.Base(strings.TrimSpace(strings.TrimPrefix(line, "pkg: ")))
			continue
		case strings.HasPrefix(line, "--- FAIL"), strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "panic:"):
			failed = append(failed, strings.TrimSpace(line))
			continue
		case !strings.HasPrefix(line, "Benchmark"):
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue // a benchmark's name alone, before its logs
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		if pkg != "" {
			name = pkg + " " + name
		}
		r := byName[name]
		if r == nil {
			r = &result{name: name, values: map[string][]float64{}}
			byName[name] = r
			order = append(order, r)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, nil, fmt.Errorf("line %q: value %q: %w", line, f[i], err)
			}
			u := f[i+1]
			if _, seen := r.values[u]; !seen {
				r.units = append(r.units, u)
			}
			r.values[u] = append(r.values[u], v)
			switch u {
			case "ns/op", "B/op", "allocs/op", "MB/s":
			default:
				r.custom = true
			}
		}
	}
	return order, failed, sc.Err()
}

// printTable prints rows in columns: the first two (names) left-aligned,
// the numbers right-aligned.
func printTable(out io.Writer, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-len(c))
			switch {
			case i < 2:
				b.WriteString(c + pad + "  ")
			default:
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(out, strings.TrimRight(b.String(), " "))
	}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// format prints about three significant digits, whole numbers from 100 up.
func format(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
