package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pias-net/pias/sim"
)

func init() {
	register("sim", "sim fig6|failures|churn: the real control plane at scale, on a virtual clock", runSim)
}

func runSim(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	const synopsis = "sim fig6|failures|churn [--proxies LIST] [--members LIST] [--seed N] [--out DIR] [--trace FILE] [--zipf S] [--inaccuracy LIST] [--groups N] [--targets N] [--deaths N] [--revive DUR] [--churn DUR] [--settle DUR] [--pprof ADDR]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintf(stdout, "Usage: pias %s\n", synopsis)
			return 0
		}
		fmt.Fprintf(stderr, "Usage: pias %s\n", synopsis)
		return 2
	}
	scenario := args[0]
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		// GOGC or GOMEMLIMIT set in the environment wins.
		stop := make(chan struct{})
		defer close(stop)
		go simGC(stop)
	}
	fs, parse := flags("sim "+scenario, synopsis, stdout, stderr)
	proxies := fs.String("proxies", "", "comma-separated proxy counts (fig6 default 100,1000,10000; failures 1000)")
	members := fs.String("members", "60000,90000,120000", "comma-separated peak group sizes (fig6)")
	inacc := fs.String("inaccuracy", "0,5,25,50", "comma-separated inaccuracies in percent (fig6)")
	clusters := fs.String("clusters", "10,100", "comma-separated cluster sizes (failures)")
	seed := fs.Uint64("seed", 1, "seed of the trace and the network")
	out := fs.String("out", "sim-out", "directory for CSV, SVG and markdown output")
	trace := fs.String("trace", "", "CSV trace (seconds,proxy,join|leave) instead of the synthetic one (fig6)")
	zipf := fs.Float64("zipf", 0, "spread members over proxies by Zipf's law with this exponent (> 1); 0: uniform")
	groups := fs.Int("groups", 1000, "groups (churn)")
	targets := fs.Int("targets", 10000, "targets, each of one group, joining and leaving (churn)")
	deaths := fs.Int("deaths", 10, "proxies that die during the churn (churn)")
	revive := fs.Duration("revive", 0, "each dead proxy restarts this long after its death; 0: never (churn)")
	churnFor := fs.Duration("churn", time.Minute, "how long targets come and go after they all joined (churn)")
	settle := fs.Duration("settle", time.Minute, "how long the run goes on after its last event (churn)")
	pprofAddr := fs.String("pprof", "", "serve Go's profiler at this loopback IP:PORT, e.g. 127.0.0.1:6060, to profile a long run while it goes; off if empty")
	if rc := parse(args[1:]); rc >= 0 {
		return rc
	}
	stopPprof, rc := startPprof("sim", *pprofAddr, stderr, stderr)
	if rc >= 0 {
		return rc
	}
	defer stopPprof()
	bad := func(err error) int {
		fmt.Fprintf(stderr, "pias sim: %v\n", err)
		return 2
	}
	switch scenario {
	case "fig6":
		ps, err := ints(orDefault(*proxies, "100,1000,10000"))
		if err != nil {
			return bad(err)
		}
		ns, err := ints(*members)
		if err != nil {
			return bad(err)
		}
		xs, err := floats(*inacc)
		if err != nil {
			return bad(err)
		}
		if *zipf != 0 && *zipf <= 1 {
			return bad(fmt.Errorf("--zipf must be above 1"))
		}
		o := sim.Fig6Options{Proxies: ps, Members: ns, Inaccuracies: xs, Seed: *seed, Zipf: *zipf, Out: *out, Progress: stderr}
		if *trace != "" {
			if len(ps) != 1 {
				return bad(fmt.Errorf("--trace takes one --proxies count"))
			}
			f, err := os.Open(*trace)
			if err != nil {
				return bad(err)
			}
			o.Trace, err = sim.ReadTrace(f, ps[0])
			f.Close()
			if err != nil {
				return bad(err)
			}
			o.TraceName = *trace
		}
		rows, err := sim.RunFig6Grid(o)
		if err != nil {
			fmt.Fprintf(stderr, "pias sim: %v\n", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "proxies\tmembers\tinaccuracy\tregisters/s\tchanges/s\trefreshes/s\techo/s\tsim-s/wall-s\tpeak heap MiB\t")
		for _, r := range rows {
			d := r.Res.SimTime
			fmt.Fprintf(tw, "%d\t%d\t%g%%\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%d\t\n", r.Proxies, r.Members, r.Res.Inaccuracy,
				sim.Rate(r.Res.Total.Registers, d), sim.Rate(r.Res.Total.Changes, d), sim.Rate(r.Res.Total.Refreshes, d), sim.Rate(r.Res.Total.Echo, d),
				d.Seconds()/r.Res.Wall.Seconds(), r.Res.PeakHeap>>20)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "wrote %s/fig6_{series,averages}.{csv,svg}, fig6_averages_changes.svg, fig6_summary.md\n", *out)
		return 0
	case "failures":
		ps, err := ints(orDefault(*proxies, "1000"))
		if err != nil {
			return bad(err)
		}
		cs, err := ints(*clusters)
		if err != nil {
			return bad(err)
		}
		return runFailures(ps, cs, *seed, *out, stdout, stderr)
	case "churn":
		ps, err := ints(orDefault(*proxies, "500"))
		if err != nil {
			return bad(err)
		}
		cfg := sim.ChurnConfig{Groups: *groups, Targets: *targets, Deaths: *deaths, Revive: *revive, Churn: *churnFor, Settle: *settle, Seed: *seed, Progress: stderr}
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "inaccuracy" })
		if set {
			xs, err := floats(*inacc)
			if err != nil || len(xs) != 1 {
				return bad(fmt.Errorf("churn takes one --inaccuracy"))
			}
			cfg.Inaccuracy = xs[0]
			if cfg.Inaccuracy == 0 {
				cfg.Inaccuracy = -1 // overlay: negative reports every change
			}
		}
		return runChurn(ps, cfg, *out, stdout, stderr)
	}
	fmt.Fprintf(stderr, "pias sim: unknown scenario %q (fig6, failures or churn)\n", scenario)
	return 2
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > 1<<24 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func floats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x < 0 || x > 1000 {
			return nil, fmt.Errorf("bad percentage %q", f)
		}
		out = append(out, x)
	}
	return out, nil
}

func runFailures(ps, cs []int, seed uint64, out string, stdout, stderr io.Writer) int {
	if err := os.MkdirAll(out, 0o755); err != nil {
		fmt.Fprintf(stderr, "pias sim: %v\n", err)
		return 1
	}
	var rs []*sim.FailuresResult
	for _, p := range ps {
		for _, c := range cs {
			fmt.Fprintf(stderr, "failures: %d proxies in clusters of %d\n", p, c)
			r, err := sim.RunFailures(sim.FailuresConfig{Proxies: p, Cluster: c, Seed: seed, Progress: stderr})
			if err != nil {
				fmt.Fprintf(stderr, "pias sim: %v\n", err)
				return 1
			}
			rs = append(rs, r)
		}
	}
	f, err := os.Create(out + "/failures.csv")
	if err != nil {
		fmt.Fprintf(stderr, "pias sim: %v\n", err)
		return 1
	}
	sim.WriteFailures(f, rs)
	if err := f.Close(); err != nil {
		fmt.Fprintf(stderr, "pias sim: %v\n", err)
		return 1
	}
	sim.WriteFailures(stdout, rs)
	for _, r := range rs {
		fmt.Fprintf(stdout, "%d proxies, clusters of %d: at rest %.1f msgs/proxy/s %v; %.0f B per (proxy, member); peak heap %d MiB; %.2f sim-s per wall-s\n",
			r.Proxies, r.Cluster, r.RestPerProxy, r.RestByType, r.BytesPerPair, r.PeakHeap>>20, r.SimTime.Seconds()/r.Wall.Seconds())
	}
	return 0
}

func runChurn(ps []int, cfg sim.ChurnConfig, out string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "pias sim: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fail(err)
	}
	var rs []*sim.ChurnResult
	for _, p := range ps {
		cfg.Proxies = p
		fmt.Fprintf(stderr, "churn: %d proxies, %d groups, %d targets, %d deaths\n", p, cfg.Groups, cfg.Targets, cfg.Deaths)
		r, err := sim.RunChurn(cfg)
		if err != nil {
			return fail(err)
		}
		rs = append(rs, r)
	}
	for name, write := range map[string]func(io.Writer, []*sim.ChurnResult) error{"churn.csv": sim.WriteChurn, "churn_series.csv": sim.WriteChurnSeries} {
		f, err := os.Create(filepath.Join(out, name))
		if err != nil {
			return fail(err)
		}
		err = write(f, rs)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(err)
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "proxies\tgroups\ttargets\tjoins\tleaves\tfailovers\tregisters/s\tchanges\trefreshes\tdeaths seen\tmissed\tfalse\tconverged after\tsim-s/wall-s\tpeak heap MiB\t")
	rc := 0
	for _, r := range rs {
		conv := r.ConvergeAfter.String()
		if !r.Converged {
			conv, rc = "NO", 1
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\t%.2f\t%d\t\n", r.Proxies, r.Groups, r.Targets, r.Joins, r.Leaves, r.Failovers,
			sim.Rate(r.Total.Registers, r.SimTime), r.Total.Changes, r.Total.Refreshes, r.Detected, r.Missed, r.False, conv,
			r.SimTime.Seconds()/r.Wall.Seconds(), r.PeakHeap>>20)
	}
	tw.Flush()
	for _, r := range rs {
		switch {
		case !r.Converged:
			fmt.Fprintf(stdout, "%d proxies: not converged %v after the last event: %s\n", r.Proxies, r.SimTime-r.LastEvent, r.Problem)
		case r.Problem != "":
			fmt.Fprintf(stdout, "%d proxies: the last check to fail, %v after the last event: %s\n", r.Proxies, r.ConvergeAfter-250*time.Millisecond, r.Problem)
		}
	}
	fmt.Fprintf(stdout, "wrote %s/churn.csv, %s/churn_series.csv\n", out, out)
	return rc
}

// simGC keeps the collector at simGCPercent of the live heap, and the
// memory limit at simMemoryLimit, checked every second, until stop is
// closed.
func simGC(stop <-chan struct{}) {
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	pct := debug.SetGCPercent(simGCPercent(0))
	limit := debug.SetMemoryLimit(simMemoryLimit(0))
	advised := map[uint64]bool{}
	adviseHugePages(advised)
	for t := time.NewTicker(time.Second); ; {
		select {
		case <-stop:
			t.Stop()
			debug.SetGCPercent(pct)
			debug.SetMemoryLimit(limit)
			return
		case <-t.C:
		}
		adviseHugePages(advised)
		metrics.Read(live)
		if live[0].Value.Kind() == metrics.KindUint64 {
			debug.SetGCPercent(simGCPercent(live[0].Value.Uint64()))
			debug.SetMemoryLimit(simMemoryLimit(live[0].Value.Uint64()))
		}
	}
}

// simMemoryLimit is the memory limit for a simulation whose live heap is
// live bytes: 7.5 GiB, so that a run that fits in 8 GiB stays there (at
// GOGC 25 failures at 10,000 proxies held 5.6 GiB live and 8.1 GiB of
// RSS: pages freed but not yet returned, and the heap's growth between
// collections), or 1.25× a live heap past 6 GiB, so that the collector
// never runs without a pause for a limit the live heap fills.
func simMemoryLimit(live uint64) int64 {
	const limit = 15 << 29 // 7.5 GiB
	return max(limit, int64(live+live/4))
}

// simGCPercent is the GOGC for a simulation whose live heap is live
// bytes. A run's heap is mostly long-lived: collect at 5× it, not 2× (a
// quarter less CPU: fig6 at 10,000 proxies peaks at 3.4 GiB so), but at 4
// GiB at the latest, and at 1.25× a live heap past 3.2 GiB. (A fixed
// memory limit of 4 GiB was below the 5 GiB that failures at 10,000
// proxies holds live in its partition, and the collector ran without a
// pause.)
func simGCPercent(live uint64) int {
	const goal = 4 << 30
	if live == 0 || 5*live <= goal {
		return 400
	}
	return max(25, int(100*(float64(goal)/float64(live)-1)))
}
