package contract

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// checkRefusal holds what every refusal must: INVALID_ARGUMENT, of a size
// bounded whatever the request held.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("refused with %v: %v", st.Code(), err)
	}
	if n := proto.Size(st.Proto()); n > 16<<10 {
		t.Fatalf("a refusal of %d bytes", n)
	}
}

// FuzzValidation feeds requests of any content to the validation of every
// RPC that takes text, identifiers or codes: each is refused with a bounded
// INVALID_ARGUMENT, or accepted only within the documented limits.
func FuzzValidation(f *testing.F) {
	f.Add("Hello there.", "avery", "en", "req-1", uint32(16000), float32(1), int32(3), "https://example.com/a.mp3", "POST")
	f.Add(" ", "voice_x", "auto", "", uint32(0), float32(0), int32(0), "", "")
	f.Add("x", "bad voice!", "xx", "id with spaces", uint32(11025), float32(3), int32(99), "ftp://x", "PUT")
	f.Add("multi", "meher", "multi-south-indic", "a.b-c_d", uint32(48000), float32(0.5), int32(2), "http://[::1]:8080/x", "GET")
	f.Fuzz(func(t *testing.T, text, voice, lang, id string, rate uint32, speed float32, enc int32, url, method string) {
		plan, err := PlanSynthesis(&speechv1.SynthesizeRequest{Text: text, VoiceId: voice, Language: lang, RequestId: id,
			SampleRateHz: rate, Speed: speed, Encoding: speechv1.AudioEncoding(enc), PronunciationDictIds: []string{id}})
		if err != nil {
			checkRefusal(t, err)
		} else if plan.Upstream.VoiceID == "" || !slices.Contains(synthesisRates, plan.Rate) || (lang != "" && !slices.Contains(synthesisLanguages, lang)) {
			t.Fatalf("accepted %+v", plan.Upstream)
		}

		if _, _, err := PlanStream(&speechv1.SynthesisConfig{VoiceId: voice, Language: lang, SessionId: id, SampleRateHz: rate,
			Encoding: speechv1.AudioEncoding(enc), WordTimestamps: enc%2 == 0, MaxBufferFlushMs: rate}); err != nil {
			checkRefusal(t, err)
		}

		req := &speechv1.TranscribeRequest{Source: &speechv1.TranscribeRequest_Url{Url: url},
			Config: &speechv1.TranscriptionConfig{Language: lang, Encoding: speechv1.AudioEncoding(enc), SampleRateHz: rate,
				Model: speechv1.TranscriptionModel(enc % 4), WebhookUrl: url, WebhookMethod: method, WebhookExtra: map[string]string{id: text}}}
		up, err := PlanTranscribe(req, nil)
		if err != nil {
			checkRefusal(t, err)
		} else if !slices.Contains(transcriptionLanguages, up.Language) {
			t.Fatalf("accepted language %q", up.Language)
		}

		var v rpcerror.Violations
		live := PlanLive(v.Under("config"), &speechv1.LiveTranscriptionConfig{Language: lang, SampleRateHz: rate,
			Encoding: speechv1.AudioEncoding(enc), SessionId: id, Keywords: []*speechv1.Keyword{{Text: text, Intensifier: uint32(speed)}}})
		if err := v.Err(); err != nil {
			checkRefusal(t, err)
		} else if !slices.Contains(liveLanguages, live.Language) || live.Encoding == "" {
			t.Fatalf("accepted %+v", live)
		}

		var dv rpcerror.Violations
		CheckEntries(&dv, []*speechv1.PronunciationEntry{{Word: text, Pronunciation: voice}, {Word: text, Pronunciation: id}})
		if err := dv.Err(); err != nil {
			checkRefusal(t, err)
		}
	})
}
