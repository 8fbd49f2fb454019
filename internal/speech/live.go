package speech

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

type liveStream = grpc.BidiStreamingServer[speechv1.TranscribeLiveRequest, speechv1.TranscribeLiveResponse]

// bytesPerSecond is the rate of a session's audio, by its encoding; 0 for
// compressed audio, whose rate varies.
func bytesPerSecond(r *smallest.LiveRequest) float64 {
	per := map[string]float64{"linear16": 2, "linear32": 4, "alaw": 1, "mulaw": 1}[r.Encoding]
	return per * float64(r.SampleRate)
}

// TranscribeLive relays audio to a Pulse realtime session as it arrives and
// its transcripts back, until either side ends; see uplink for the caller's half.
func (s *Transcription) TranscribeLive(stream liveStream) error {
	if err := offered(s.caps.Live, s.caps.LiveMissing); err != nil {
		return err
	}
	ctx := stream.Context()
	config, err := firstConfig(stream.Recv, (*speechv1.TranscribeLiveRequest).GetConfig, "audio")
	if err != nil {
		return err
	}
	var v rpcerror.Violations
	req := contract.PlanLive(v.Under("config"), config)
	heartbeat := contract.CheckHeartbeat(v.Under("config"), "heartbeat_interval_ms", config.GetHeartbeatIntervalMs())
	if err := v.Err(); err != nil {
		return err
	}
	if err := quota.Check(ctx, quota.AudioSeconds); err != nil {
		return err
	}
	session, err := s.up.Listen(ctx, req)
	if err != nil {
		return err
	}
	defer session.Close()
	out := newOutbox(stream.Send, heartbeat, func(h *speechv1.Heartbeat) *speechv1.TranscribeLiveResponse {
		return &speechv1.TranscribeLiveResponse{Event: &speechv1.TranscribeLiveResponse_Heartbeat{Heartbeat: h}}
	})
	defer out.Close()
	if bytesPerSecond(req) == 0 {
		// Compressed audio has no fixed rate: its length is the session's,
		// as a realtime session takes it.
		defer func(start time.Time) {
			_ = quota.Debit(context.WithoutCancel(ctx), quota.AudioSeconds, time.Since(start).Seconds())
		}(time.Now())
	}

	// The caller's audio and commands go upstream on their own goroutine
	// while this one relays Smallest's answers. When this handler returns,
	// gRPC ends the call, which ends that goroutine's Recv.
	uplinkErr := make(chan error, 1)
	go uplink(stream, session, uplinkErr, s.metrics, bytesPerSecond(req))

	interim := config.GetInterimResults()
	var ids upstreamIDs
	for {
		ev, err := session.Next()
		if errors.Is(err, io.EOF) {
			return nil // the last transcript has been relayed
		}
		if err != nil {
			// A bad message from the caller explains the session's end better.
			select {
			case uerr := <-uplinkErr:
				if uerr != nil {
					return uerr
				}
			default:
			}
			return err
		}
		ids.note(ctx, ev.SessionID)
		msg := contract.LiveResponse(ev, interim)
		if msg == nil {
			continue
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}

// uplink forwards the caller's messages to the session until the caller
// half-closes (then it asks Smallest to finish) or goes away, and then sends
// one value on done: nil, or the status of a message that broke the protocol,
// which it sends before ending the session so that the handler finds it.
func uplink(stream liveStream, session *smallest.LiveSession, done chan<- error, m *metrics.Speech, rate float64) {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			_ = session.CloseStream() // if it fails, the session has ended; reading it says why
			done <- nil
			return
		}
		if err != nil {
			done <- nil // the caller went away; the call's context ends the session
			return
		}
		var werr error
		switch part := msg.GetPart().(type) {
		case *speechv1.TranscribeLiveRequest_Audio:
			m.AudioIn("TranscribeLive", len(part.Audio))
			if rate > 0 {
				if err := quota.Charge(stream.Context(), quota.AudioSeconds, float64(len(part.Audio))/rate); err != nil {
					done <- err
					session.Close()
					return
				}
			}
			werr = session.SendAudio(part.Audio)
		case *speechv1.TranscribeLiveRequest_Finalize:
			werr = session.Finalize()
		case *speechv1.TranscribeLiveRequest_Config:
			var v rpcerror.Violations
			v.Add("config", rpcerror.RuleConflict, "may only be sent once, in the first message")
			done <- v.Err()
			session.Close()
			return
		}
		if werr != nil {
			done <- nil // the session has ended; reading it says why
			return
		}
	}
}
