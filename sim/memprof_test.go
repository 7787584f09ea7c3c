package sim

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// heapAtRest writes a heap profile when RunFailures reports it is at rest.
type heapAtRest struct {
	t     *testing.T
	path  string
	at    string // the progress line's text that takes the profile
	heap  uint64
	pairs int
	// cpuFrom: the progress line's text after which a CPU profile goes to
	// cpuPath (cpu, till the run ends).
	cpuFrom, cpuPath string
	cpu              *os.File
}

func (h *heapAtRest) Write(b []byte) (int, error) {
	if h.cpuFrom != "" && strings.Contains(string(b), h.cpuFrom) && h.cpu == nil {
		f, err := os.Create(h.cpuPath)
		if err != nil {
			h.t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			h.t.Fatal(err)
		}
		h.cpu = f
	}
	if strings.Contains(string(b), h.at) && h.heap == 0 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		h.heap = m.HeapAlloc
		if h.path != "" {
			f, err := os.Create(h.path)
			if err != nil {
				h.t.Fatal(err)
			}
			if err := pprof.WriteHeapProfile(f); err != nil {
				h.t.Fatal(err)
			}
			f.Close()
		}
		if os.Getenv("SIM_HEAPSTOP") != "" {
			h.t.Skipf("heap %.1f MiB (%.0f B per pair) %s; stopped there (SIM_HEAPSTOP)", float64(h.heap)/(1<<20), float64(h.heap)/float64(h.pairs), h.at)
		}
	}
	return len(b), nil
}

// TestFailuresHeap runs failures at SIM_PROXIES (default 500) in clusters
// of SIM_CLUSTER (default 10) and reports the heap per (proxy, member) at
// rest (or after the event SIM_HEAPAT names, e.g. "partition");
// SIM_HEAPPROF names a file for a heap profile taken then; SIM_HEAPSTOP=1
// ends the run there. SIM_CPUPROF names a file for a CPU profile from the
// progress line that has SIM_CPUFROM (e.g. "kill cluster": the partition)
// to the end. Set
// SIM_HEAP=1 to run it.
func TestFailuresHeap(t *testing.T) {
	if os.Getenv("SIM_HEAP") == "" {
		t.Skip("SIM_HEAP not set")
	}
	p, c := envInt("SIM_PROXIES", 500), envInt("SIM_CLUSTER", 10)
	runtime.MemProfileRate = 64 << 10
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	h := &heapAtRest{t: t, path: os.Getenv("SIM_HEAPPROF"), at: "at rest", pairs: p * p}
	if at := os.Getenv("SIM_HEAPAT"); at != "" {
		h.at = at // e.g. "partition": after that event
	}
	if path := os.Getenv("SIM_CPUPROF"); path != "" {
		h.cpuFrom, h.cpuPath = os.Getenv("SIM_CPUFROM"), path
		defer func() {
			if h.cpu != nil {
				pprof.StopCPUProfile()
				h.cpu.Close()
			}
		}()
	}
	r, err := RunFailures(FailuresConfig{Proxies: p, Cluster: c, Seed: 1, Rest: 2 * time.Second, Window: 2 * time.Second, Progress: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d proxies, clusters of %d: heap at rest %.1f MiB, %.0f B per pair; after start %.0f B per pair; wall %v",
		p, c, float64(h.heap)/(1<<20), float64(h.heap-m0.HeapAlloc)/float64(p*p), r.BytesPerPair, r.Wall.Round(time.Millisecond))
	fmt.Fprintf(os.Stderr, "events: %+v\n", len(r.Events))
}
