package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// SpeechUpstream is what the synthesis service needs from Smallest.
type SpeechUpstream interface {
	StreamSpeech(ctx context.Context, r *smallest.SpeechRequest) (*smallest.SpeechStream, error)
	ListVoices(ctx context.Context) ([]smallest.Voice, error)
}

type synthesisService struct {
	speechv1.UnimplementedSynthesisServiceServer
	upstream SpeechUpstream
	// unavailable, when set, is why this backend cannot synthesize.
	unavailable string
}

func (s *synthesisService) Synthesize(req *speechv1.SynthesizeRequest, stream grpc.ServerStreamingServer[speechv1.SynthesizeResponse]) error {
	if s.unavailable != "" {
		return rpcerror.Unimplemented(s.unavailable)
	}
	plan, err := planSynthesis(req)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	up, err := s.upstream.StreamSpeech(ctx, &plan.upstream)
	if err != nil {
		return err
	}
	defer up.Close()
	noteUpstreamID(ctx, up.RequestID)

	if err := stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Format{Format: &speechv1.SynthesisFormat{
		Encoding:          plan.encoding,
		SampleRateHz:      plan.rate,
		Channels:          1,
		BitsPerSample:     uint32(plan.bytesPerSample * 8),
		Container:         plan.container,
		VoiceId:           req.GetVoiceId(),
		Model:             plan.upstream.Model,
		RequestId:         req.GetRequestId(),
		SessionId:         req.GetSessionId(),
		UpstreamRequestId: up.RequestID,
		UpstreamSessionId: up.SessionID,
		ContentExpiry:     up.ContentExpiry,
	}}}); err != nil {
		return err
	}
	out := newRelay(stream, plan)
	if plan.container == speechv1.AudioContainer_AUDIO_CONTAINER_WAV {
		header := audio.AppendWAVHeader(nil, int(plan.rate), 1, 16, audio.UnknownSize)
		if err := out.send(header, false); err != nil {
			return err
		}
	}
	for {
		chunk, err := up.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := out.send(chunk, true); err != nil {
			return err
		}
	}
	totals := out.totals()
	totals.Characters = plan.characters
	totals.UpstreamFirstByteMs = uint32(up.FirstByte() / time.Millisecond)
	totals.UpstreamRequestId = up.RequestID
	return stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Totals{Totals: totals}})
}

// noteUpstreamID adds Smallest's request id to the call's log line.
func noteUpstreamID(ctx context.Context, id string) {
	if id != "" {
		logging.AddFields(ctx, logging.Fields{"upstream_request_id", id})
	}
}

func (s *synthesisService) ListVoices(ctx context.Context, req *speechv1.ListVoicesRequest) (*speechv1.ListVoicesResponse, error) {
	if s.unavailable != "" {
		return nil, rpcerror.Unimplemented(s.unavailable)
	}
	voices, err := s.upstream.ListVoices(ctx)
	if err != nil {
		return nil, err
	}
	lang := strings.ToLower(req.GetLanguage())
	gender := strings.ToLower(req.GetGender())
	resp := &speechv1.ListVoicesResponse{}
	for _, v := range voices {
		out := voiceMessage(v)
		if lang != "" && !slices.Contains(out.LanguageCodes, lang) && !slices.ContainsFunc(out.Languages, func(l string) bool { return strings.EqualFold(l, lang) }) {
			continue
		}
		if gender != "" && !strings.EqualFold(out.Gender, gender) {
			continue
		}
		resp.Voices = append(resp.Voices, out)
	}
	return resp, nil
}

func voiceMessage(v smallest.Voice) *speechv1.Voice {
	out := &speechv1.Voice{
		VoiceId:     v.VoiceID,
		DisplayName: v.DisplayName,
		Languages:   v.Tags.Language,
		Accent:      v.Tags.Accent,
		Gender:      v.Tags.Gender,
		Age:         v.Tags.Age,
		UseCases:    v.Tags.UseCases,
		Emotions:    v.Tags.Emotions,
		IsClone:     strings.HasPrefix(v.VoiceID, "voice_"),
	}
	for _, l := range v.Tags.Language {
		if code := languageCode(l); code != "" {
			out.LanguageCodes = append(out.LanguageCodes, code)
		}
	}
	return out
}
