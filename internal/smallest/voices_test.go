package smallest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/smallest"
)

// TestSharedVoicesFetchFollowsItsWaiters: the fetch that callers share runs
// while any of them waits, whatever the deadline of the one that started
// it, and stops as soon as none does.
func TestSharedVoicesFetchFollowsItsWaiters(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	cancelled := make(chan struct{}, 8)
	var calls atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
			io.WriteString(w, `{"voices":[{"voiceId":"avery","displayName":"Avery","tags":{}}]}`)
		case <-r.Context().Done():
			cancelled <- struct{}{}
		}
	})
	c := newClient(t, srv, func(cfg *smallest.Config) { cfg.VoicesTTL = time.Minute })

	// A caller with a short deadline starts the fetch; a patient one joins it.
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	shortDone := make(chan error, 1)
	go func() { _, err := c.ListVoices(short); shortDone <- err }()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	patientDone := make(chan error, 1)
	go func() {
		voices, err := c.ListVoices(t.Context())
		if err == nil && len(voices) != 1 {
			err = fmt.Errorf("got %d voices", len(voices))
		}
		patientDone <- err
	}()
	if err := <-shortDone; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short caller: %v, want its deadline", err)
	}
	select {
	case <-cancelled:
		t.Fatal("the fetch ended with the first caller's deadline while another caller waited")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-patientDone; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
}

// TestAbandonedVoicesFetchIsCancelled: a caller alone that gives up stops
// the shared fetch at once, and the next caller starts afresh rather than
// joining a fetch that is being cancelled.
func TestAbandonedVoicesFetchIsCancelled(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 8)
	cancelled := make(chan struct{}, 8)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		cancelled <- struct{}{}
	})
	c := newClient(t, srv, func(cfg *smallest.Config) { cfg.VoicesTTL = time.Minute })
	for range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { _, err := c.ListVoices(ctx); done <- err }()
		<-started
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("ListVoices: %v, want context.Canceled", err)
		}
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream request outlived its only caller")
		}
	}
}
