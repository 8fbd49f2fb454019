package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/smallest"
)

// A turn of the converse phase: 400 ms of "speech" (a tone the emulated
// Hydra hears as such), then silence in real time, 40 ms a message, until
// the emulator's 300 ms of quiet ends the turn.
const (
	turnSpeech  = 400 * time.Millisecond
	turnPiece   = 40 * time.Millisecond
	turnSilence = 320 * time.Millisecond // the first whole number of pieces past 300 ms
)

// conversePhase measures the time from the end of a caller's turn (the
// send of the audio that completes Hydra's end-of-turn silence) to the
// first audio of the answer, through the gateway and from the gateway's
// own Hydra client straight to the emulator.
func conversePhase(ctx context.Context, s *settings) ([]*result, error) {
	r, err := newRig(ctx, s, emulator.Options{}, 2)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	sessions, turns := 8, 15
	if s.quick {
		sessions, turns = 1, 4
	}
	// Interleaved, so that a neighbour's load falls on both sides alike.
	var d, g []time.Duration
	for round := range 2 {
		dd, err := answerLatencies(ctx, sessions, turns/2+round%2, func(ctx context.Context) (conversation, error) { return directConverse(ctx, r.dc) })
		if err != nil {
			return nil, fmt.Errorf("direct: %w", err)
		}
		gg, err := answerLatencies(ctx, sessions, turns/2+round%2, func(ctx context.Context) (conversation, error) {
			return gatewayConverse(ctx, speechv1.NewConversationServiceClient(r.gc.conns[round%len(r.gc.conns)]))
		})
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		d, g = append(d, dd...), append(g, gg...)
	}
	slices.Sort(d)
	slices.Sort(g)
	fmt.Fprintf(s.log, "  %d answers direct, %d through the gateway, %d conversations at once\n", len(d), len(g), sessions)
	var out []*result
	for _, p := range []float64{50, 90, 99} {
		res := &result{Phase: "converse", Name: fmt.Sprintf("end of speech to first answer audio, p%g", p), Unit: "ms",
			Gateway: percentile(g, p), Baseline: percentile(d, p), BaselineName: "direct Hydra client", Compare: "difference"}
		res.Value = res.Gateway - res.Baseline
		out = append(out, res)
	}
	return out, nil
}

// conversation is the part of a Hydra session the latency measure needs.
type conversation interface {
	audio([]byte) error
	// next returns "audio" for answer audio, "done" for a response's end,
	// and "" for any other event.
	next() (string, error)
	close()
}

// answerLatencies holds sessions conversations of turns turns each and
// returns the times from each turn's end to its answer's first audio.
func answerLatencies(ctx context.Context, sessions, turns int, open func(context.Context) (conversation, error)) ([]time.Duration, error) {
	speech, silence := tone(turnSpeech), make([]byte, int(turnPiece.Seconds()*32000))
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := converseTurns(ctx, open, turns, speech, silence, func(d time.Duration) {
				mu.Lock()
				all = append(all, d)
				mu.Unlock()
			}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return all, <-errs
}

func converseTurns(ctx context.Context, open func(context.Context) (conversation, error), turns int, speech, silence []byte, took func(time.Duration)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	for range turns {
		ended := make(chan time.Time, 1)
		sent := make(chan error, 1)
		go func() { sent <- speakTurn(ctx, c, speech, silence, ended) }()
		first := true
		for {
			kind, err := c.next()
			if err != nil {
				cancel()
				<-sent //nolint:errcheck // the session's error, which this one explains
				return err
			}
			if kind == "audio" && first {
				first = false
				select {
				case t := <-ended:
					took(time.Since(t))
				default:
					return errors.New("an answer came before the turn ended")
				}
			}
			if kind == "done" && !first {
				break
			}
		}
		if err := <-sent; err != nil {
			return err
		}
	}
	return nil
}

// speakTurn sends one turn in real time and reports, on ended, when the
// piece that ends it was sent.
func speakTurn(ctx context.Context, c conversation, speech, silence []byte, ended chan<- time.Time) error {
	piece := int(turnPiece.Seconds() * 32000)
	start := time.Now()
	n := 0
	send := func(b []byte) error {
		if !sleepCtx(ctx, time.Until(start.Add(time.Duration(n)*turnPiece))) {
			return ctx.Err()
		}
		n++
		return c.audio(b)
	}
	for i := 0; i < len(speech); i += piece {
		if err := send(speech[i:min(i+piece, len(speech))]); err != nil {
			return err
		}
	}
	for i := range int(turnSilence / turnPiece) {
		if i == int(turnSilence/turnPiece)-1 {
			ended <- start.Add(time.Duration(n) * turnPiece)
		}
		if err := send(silence); err != nil {
			return err
		}
	}
	return nil
}

// tone is d of a loud 300 Hz tone, PCM16 at 16 kHz.
func tone(d time.Duration) []byte {
	n := int(d.Seconds() * 16000)
	b := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(8000*math.Sin(2*math.Pi*300*float64(i)/16000))))
	}
	return b
}

type directConversation struct{ c *smallest.Conversation }

func directConverse(ctx context.Context, c *smallest.Client) (conversation, error) {
	conv, err := c.Converse(ctx, &smallest.ConversationRequest{Model: "hydra-v1.1"})
	return directConversation{conv}, err
}

func (d directConversation) audio(b []byte) error { return d.c.SendAudio(b) }
func (d directConversation) close()               { d.c.Close() }
func (d directConversation) next() (string, error) {
	ev, err := d.c.Next()
	if err != nil {
		return "", err
	}
	switch ev.Type {
	case "response.output_audio.delta":
		return "audio", nil
	case "response.done":
		return "done", nil
	}
	return "", nil
}

type gatewayConversation struct {
	stream speechv1.ConversationService_ConverseClient
}

func gatewayConverse(ctx context.Context, c speechv1.ConversationServiceClient) (conversation, error) {
	stream, err := c.Converse(withKey(ctx))
	if err != nil {
		return nil, err
	}
	err = stream.Send(&speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Config{Config: &speechv1.ConversationConfig{}}})
	return gatewayConversation{stream}, err
}

func (g gatewayConversation) audio(b []byte) error {
	return g.stream.Send(&speechv1.ConverseRequest{Part: &speechv1.ConverseRequest_Audio{Audio: b}})
}
func (g gatewayConversation) close() {}
func (g gatewayConversation) next() (string, error) {
	msg, err := g.stream.Recv()
	switch {
	case err != nil:
		return "", err
	case msg.GetAudio() != nil:
		return "audio", nil
	case msg.GetResponseDone() != nil:
		return "done", nil
	}
	return "", nil
}
