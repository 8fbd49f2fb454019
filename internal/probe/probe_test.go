package probe_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/speechgate/speechgate/internal/probe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHysteresis(t *testing.T) {
	t.Parallel()
	down := errors.New("down")
	tests := []struct {
		name    string
		results []error // what successive checks answer; then the run stops
		want    []bool  // the states reported
	}{
		{name: "starts healthy", results: []error{nil, nil}, want: []bool{true}},
		{name: "starts unhealthy at once", results: []error{down}, want: []bool{false}},
		{name: "one or two failures do not flap", results: []error{nil, down, nil, down, down, nil}, want: []bool{true}},
		{name: "three in a row fall", results: []error{nil, down, down, down}, want: []bool{true, false}},
		{name: "two in a row rise", results: []error{down, nil, down, nil, nil}, want: []bool{false, true}},
		{name: "both ways", results: []error{nil, down, down, down, nil, nil, down}, want: []bool{true, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var mu sync.Mutex
			var got []bool
			i := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				probe.Run(ctx, probe.Config{
					Interval: time.Millisecond,
					Check: func(context.Context) error {
						mu.Lock()
						defer mu.Unlock()
						if i == len(tt.results) {
							cancel() // the script is over
							return tt.results[i-1]
						}
						i++
						return tt.results[i-1]
					},
					OnChange: func(healthy bool, _ error) {
						mu.Lock()
						defer mu.Unlock()
						got = append(got, healthy)
					},
				})
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not stop after its context ended")
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("states (-want +got):\n%s", d)
			}
		})
	}
}

func TestSlowCheckTimesOut(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var got error
	probe.Run(ctx, probe.Config{
		Timeout: 10 * time.Millisecond,
		Check: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		},
		OnChange: func(_ bool, err error) { got = err; cancel() },
	})
	if !errors.Is(got, context.DeadlineExceeded) {
		t.Fatalf("a check slower than the timeout reported %v", got)
	}
}
