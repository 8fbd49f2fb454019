package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// printTable writes the results as a table: each figure, its baseline, and
// how the two compare.
func printTable(w io.Writer, rep *report) {
	m := rep.Machine
	fmt.Fprintf(w, "\nspeechbench, %s, %s, %d CPUs (%s)\n\n", m.Date, m.GoVersion, m.CPUs, m.CPUModel)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tMEASURE\tGATEWAY\tBASELINE\tBASELINE IS\tCOMPARED\tTARGET")
	for _, r := range rep.Results {
		baseline := figure(r.Baseline, r.Unit)
		if r.Compare == "none" {
			baseline = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Phase, r.Name, figure(r.Gateway, r.Unit), baseline,
			r.BaselineName, compared(r), dash(r.Target))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nThe machine's load, in cores of %d: ", m.CPUs)
	for i, l := range rep.Load {
		if i > 0 {
			fmt.Fprint(w, "; ")
		}
		fmt.Fprintf(w, "%s %.2f busy", l.Phase, l.Busy)
		if l.Outside >= 0 {
			fmt.Fprintf(w, " (outside the rig at most %.2f in kept rounds)", l.Outside)
		}
	}
	fmt.Fprintln(w)
}

func figure(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

func compared(r *result) string {
	switch r.Compare {
	case "ratio":
		return fmt.Sprintf("%.2f×", r.Value)
	case "growth":
		return fmt.Sprintf("%+.1f%%", 100*r.Value)
	case "none":
		return "-"
	case "difference per stream":
		return fmt.Sprintf("%.1f %s per stream", r.Value, r.Unit)
	}
	return fmt.Sprintf("%+.2f %s", r.Value, r.Unit)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
