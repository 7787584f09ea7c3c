package sim

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteChurn writes one line per churn run: what it sent, what it
// detected, and whether and when the RAP tables converged. (Nothing that
// depends on the machine: the same seed writes the same bytes.)
func WriteChurn(w io.Writer, rs []*ChurnResult) error {
	fmt.Fprintln(w, "proxies,groups,targets,deaths,revived,inaccuracy_pct,joins,leaves,failovers,sim_s,registers,registers_per_s,changes,refreshes,echo,wire_per_s,deaths_detected,deaths_missed,false_deaths,last_event_s,converged,converge_after_s,last_problem")
	for _, r := range rs {
		d := r.SimTime
		_, err := fmt.Fprintf(w, "%d,%d,%d,%d,%d,%g,%d,%d,%d,%s,%d,%.3f,%d,%d,%d,%.3f,%d,%d,%d,%s,%t,%s,%s\n",
			r.Proxies, r.Groups, r.Targets, r.Deaths, r.Revived, r.Inaccuracy, r.Joins, r.Leaves, r.Failovers, secs(d),
			r.Total.Registers, Rate(r.Total.Registers, d), r.Total.Changes, r.Total.Refreshes, r.Total.Echo, Rate(r.Total.Wire, d),
			r.Detected, r.Missed, r.False, secs(r.LastEvent), r.Converged, secs(r.ConvergeAfter), csvQuote(r.Problem))
		if err != nil {
			return err
		}
	}
	return nil
}

// WriteChurnSeries writes each run's seconds: targets joined, proxies up,
// and the registrations and control messages sent in the second.
func WriteChurnSeries(w io.Writer, rs []*ChurnResult) error {
	fmt.Fprintln(w, "proxies,second,targets,live,registers,changes,refreshes,echo,wire")
	for _, r := range rs {
		for _, s := range r.Series {
			if _, err := fmt.Fprintf(w, "%d,%s,%d,%d,%d,%d,%d,%d,%d\n", r.Proxies, secs(s.At), s.Targets, s.Live,
				s.Registers, s.Changes, s.Refreshes, s.Echo, s.Wire); err != nil {
				return err
			}
		}
	}
	return nil
}

// secs is d in seconds, to the millisecond, without trailing zeros.
func secs[D ~int64](d D) string {
	return strconv.FormatFloat(float64(d/1e6)/1e3, 'f', -1, 64)
}

// csvQuote quotes s as a CSV field if it needs it.
func csvQuote(s string) string {
	if !strings.ContainsAny(s, ",\"\n") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
