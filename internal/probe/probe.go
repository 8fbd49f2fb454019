// Package probe watches an upstream's health endpoint with hysteresis: the
// state changes only after several checks in a row agree, so that one slow
// or failed check does not flap the gateway's own health, and with it the
// mesh's routing.
package probe

import (
	"context"
	"time"
)

// Defaults for Config's zero values.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultFall     = 3
	DefaultRise     = 2
)

// Config configures Run.
type Config struct {
	// Check asks the upstream once; nil means healthy.
	Check func(context.Context) error
	// Interval between checks. Default DefaultInterval.
	Interval time.Duration
	// Timeout of one check. Default DefaultTimeout.
	Timeout time.Duration
	// Fall is how many failed checks in a row make a healthy upstream
	// unhealthy; Rise how many good ones make an unhealthy one healthy.
	Fall, Rise int
	// OnChange is told the state after the first check and at every change
	// after that, with the last check's error when unhealthy.
	OnChange func(healthy bool, err error)
}

// Run checks until ctx ends. The first check sets the state at once, so that
// a gateway starts ready as soon as its upstream is; later changes need
// Fall or Rise checks in a row.
func Run(ctx context.Context, cfg Config) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Fall <= 0 {
		cfg.Fall = DefaultFall
	}
	if cfg.Rise <= 0 {
		cfg.Rise = DefaultRise
	}
	check := func() error {
		ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		return cfg.Check(ctx)
	}
	err := check()
	healthy := err == nil
	cfg.OnChange(healthy, err)
	streak := 0 // checks in a row that disagree with the current state
	ticker := time.NewTicker(cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		err := check()
		if ctx.Err() != nil {
			return
		}
		if (err == nil) == healthy {
			streak = 0
			continue
		}
		streak++
		if (healthy && streak >= cfg.Fall) || (!healthy && streak >= cfg.Rise) {
			healthy, streak = !healthy, 0
			cfg.OnChange(healthy, err)
		}
	}
}
