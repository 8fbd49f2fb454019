package admission_test

import (
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/admission"
	"github.com/speechgate/speechgate/internal/fleet"
	"github.com/speechgate/speechgate/internal/redistest"
)

// BenchmarkAdmission measures what admission adds to the start of a call
// that finds a slot free, with 64 streams at once: each takes a slot,
// streams for a while (2 ms: about 30,000 admissions a second, a stress;
// 20 ms: about 3,000), and gives it back. The budget (1000) never fills, so
// nothing waits: the time is admission's own, in the process and through a
// Redis on loopback. It reports the p50 and p99 of Acquire's latency, what
// a call's time to first audio grows by.
func BenchmarkAdmission(b *testing.B) {
	run := func(b *testing.B, store fleet.Store, stream time.Duration) {
		c := admission.New(admission.Config{Budgets: map[string]int{"synthesis": 1000}, Store: store})
		var mu sync.Mutex
		var all []time.Duration
		b.SetParallelism(32) // 64 streams on 2 cores
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				start := time.Now()
				release, err := c.Acquire(b.Context(), account, "synthesis")
				if err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
				time.Sleep(stream)
				release()
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
		b.StopTimer()
		slices.Sort(all)
		if len(all) > 0 {
			b.ReportMetric(float64(all[len(all)/2])/1e3, "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100])/1e3, "p99-µs")
		}
	}
	for _, stream := range []time.Duration{2 * time.Millisecond, 20 * time.Millisecond} {
		b.Run("local/stream="+stream.String(), func(b *testing.B) { run(b, fleet.NewLocal(), stream) })
		b.Run("redis/stream="+stream.String(), func(b *testing.B) {
			srv := redistest.Start(b)
			store, err := fleet.NewRedis(fleet.RedisConfig{URL: srv.URL, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { store.Close() })
			run(b, store, stream)
		})
	}
}
