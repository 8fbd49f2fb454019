package speech_test

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/speechgate/speechgate/internal/gatewaytest"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/emulator"
)

func TestPronunciationDictionaries(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	created, err := g.Synth.CreatePronunciationDictionary(ctx, &speechv1.CreatePronunciationDictionaryRequest{
		Entries: []*speechv1.PronunciationEntry{{Word: "tomato", Pronunciation: "tuh-MAH-toh"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetDictionary().GetId()
	if id == "" || created.GetDictionary().GetCreateTime() == nil {
		t.Fatalf("created = %v", created)
	}
	entries := []*speechv1.PronunciationEntry{{Word: "tomato", Pronunciation: "tuh-MAY-toh"}, {Word: "gif", Pronunciation: "jif"}}
	updated, err := g.Synth.UpdatePronunciationDictionary(ctx, &speechv1.UpdatePronunciationDictionaryRequest{Id: id, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	if d := gatewaytest.Diff(entries, updated.GetDictionary().GetEntries()); d != "" {
		t.Errorf("updated entries (-want +got):\n%s", d)
	}
	list, err := g.Synth.ListPronunciationDictionaries(ctx, &speechv1.ListPronunciationDictionariesRequest{})
	if err != nil || len(list.GetDictionaries()) != 1 || list.GetDictionaries()[0].GetId() != id {
		t.Fatalf("list = %v, %v", list, err)
	}
	// The dictionary can be used by id.
	if got := gatewaytest.Synthesize(ctx, g.Synth, &speechv1.SynthesizeRequest{Text: "A tomato.", VoiceId: "avery", PronunciationDictIds: []string{id}}); got.Err != nil {
		t.Errorf("synthesis with the dictionary: %v", got.Err)
	}
	if _, err := g.Synth.DeletePronunciationDictionary(ctx, &speechv1.DeletePronunciationDictionaryRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	_, err = g.Synth.DeletePronunciationDictionary(ctx, &speechv1.DeletePronunciationDictionaryRequest{Id: id})
	if status.Code(err) != codes.NotFound {
		t.Errorf("deleting twice: %v, want NotFound", err)
	}

	_, err = g.Synth.CreatePronunciationDictionary(ctx, &speechv1.CreatePronunciationDictionaryRequest{Entries: []*speechv1.PronunciationEntry{
		{Word: "a", Pronunciation: "ay"}, {Word: "", Pronunciation: strings.Repeat("x", 201)}, {Word: "a", Pronunciation: "uh"}}})
	want := []*errdetails.BadRequest_FieldViolation{
		{Field: "entries[1].word", Reason: "REQUIRED", Description: "is required"},
		{Field: "entries[1].pronunciation", Reason: "TOO_LONG", Description: "must be at most 200 characters, got 201"},
		{Field: "entries[2].word", Reason: "CONFLICT", Description: `"a" is already in entries[0]`},
	}
	if d := gatewaytest.Diff(want, gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()); d != "" {
		t.Errorf("violations (-want +got):\n%s", d)
	}
}

func TestVoiceClones(t *testing.T) {
	t.Parallel()
	g := gatewaytest.Start(t, emulator.New(emulator.Options{}), gatewaytest.Options{VoicesTTL: time.Minute})
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	sample := audio.AppendWAVHeader(nil, 16000, 1, 16, 6*32000) // 6 s, within the 5 to 15 s advised
	sample = append(sample, make([]byte, 6*32000)...)
	short := append(audio.AppendWAVHeader(nil, 16000, 1, 16, 41600), make([]byte, 41600)...) // 1.3 s
	resp, err := g.Synth.CreateVoiceClone(ctx, &speechv1.CreateVoiceCloneRequest{DisplayName: "My voice", Audio: sample,
		Language: "en", Tags: []string{"calm", "warm"}})
	if err != nil {
		t.Fatal(err)
	}
	clone := resp.GetVoiceClone()
	if !strings.HasPrefix(clone.GetVoiceId(), "voice_") || clone.GetStatus() != speechv1.VoiceCloneStatus_VOICE_CLONE_STATUS_PROCESSING {
		t.Fatalf("clone = %v", clone)
	}
	list, err := g.Synth.ListVoiceClones(ctx, &speechv1.ListVoiceClonesRequest{})
	if err != nil || len(list.GetVoiceClones()) != 1 || list.GetVoiceClones()[0].GetVoiceId() != clone.GetVoiceId() {
		t.Fatalf("clones = %v, %v", list, err)
	}
	c := list.GetVoiceClones()[0]
	if c.GetCloningType() != "instant" || c.GetModels()[0] != "lightning-v3.1" || d(c.GetTags(), []string{"calm", "warm"}) {
		t.Errorf("listed clone = %v", c)
	}
	// Once ready, the clone is a voice, in the (cached) list too: creating
	// a clone drops the cached list.
	g.Synth.ListVoiceClones(ctx, &speechv1.ListVoiceClonesRequest{})
	voices, err := g.Synth.ListVoices(ctx, &speechv1.ListVoicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var found *speechv1.Voice
	for _, v := range voices.GetVoices() {
		if v.GetVoiceId() == clone.GetVoiceId() {
			found = v
		}
	}
	if found == nil || !found.GetIsClone() || found.GetCapabilities().GetWordTimestamps() {
		t.Errorf("the clone in ListVoices = %v", found)
	}

	tests := []struct {
		name string
		req  *speechv1.CreateVoiceCloneRequest
		want []*errdetails.BadRequest_FieldViolation
	}{
		{name: "nothing", req: &speechv1.CreateVoiceCloneRequest{}, want: []*errdetails.BadRequest_FieldViolation{
			{Field: "display_name", Reason: "REQUIRED", Description: "is required"},
			{Field: "audio", Reason: "REQUIRED", Description: "is required: a 5 to 15 second sample of one voice"},
		}},
		{name: "too large", req: &speechv1.CreateVoiceCloneRequest{DisplayName: "x", Audio: append(sample, make([]byte, 5<<20)...)},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "audio", Reason: "TOO_LONG",
				Description: "must be at most 5 MB (5242880 bytes), got 5434924 bytes"}}},
		{name: "too short", req: &speechv1.CreateVoiceCloneRequest{DisplayName: "x", Audio: short},
			want: []*errdetails.BadRequest_FieldViolation{{Field: "audio", Reason: "OUT_OF_RANGE",
				Description: "must be a 5 to 15 second sample of one voice, got 1.3 s"}}},
		{name: "not audio", req: &speechv1.CreateVoiceCloneRequest{DisplayName: "x", Audio: []byte("just some text"), Tags: []string{"a,b"}},
			want: []*errdetails.BadRequest_FieldViolation{
				{Field: "audio", Reason: "BAD_FORMAT", Description: "must be WAV, MP3, WebM or MP4/M4A audio"},
				{Field: "tags[0]", Reason: "BAD_FORMAT", Description: "must not contain ',', which Smallest uses as the separator"},
			}},
	}
	for _, tt := range tests {
		_, err := g.Synth.CreateVoiceClone(ctx, tt.req)
		if diff := gatewaytest.Diff(tt.want, gatewaytest.Detail[*errdetails.BadRequest](err).GetFieldViolations()); status.Code(err) != codes.InvalidArgument || diff != "" {
			t.Errorf("%s: %v\n%s", tt.name, err, diff)
		}
	}
}

func d(a, b []string) bool { return strings.Join(a, ",") != strings.Join(b, ",") }

// countingVoices answers get_voices and counts the calls.
type countingVoices struct {
	calls atomic.Int32
	gate  chan struct{} // if set, each answer waits for it
}

func (f *countingVoices) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/waves/v1/lightning-v3.1/get_voices" {
		http.NotFound(w, r) // no browsing catalog: no descriptions
		return
	}
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	w.Write([]byte(`{"voices":[{"voiceId":"avery","displayName":"Avery","tags":{"language":["english"]}}]}`))
}

func TestListVoicesIsCached(t *testing.T) {
	t.Parallel()
	fake := &countingVoices{gate: make(chan struct{})}
	g := gatewaytest.Start(t, fake, gatewaytest.Options{VoicesTTL: time.Minute})
	var wg sync.WaitGroup
	for range 10 { // a burst of callers shares one upstream request
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.ListVoicesRequest{}); err != nil {
				t.Error(err)
			}
		}()
	}
	gatewaytest.WaitFor(t, func() bool { return fake.calls.Load() == 1 })
	close(fake.gate)
	wg.Wait()
	g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), callerKey), &speechv1.ListVoicesRequest{})
	if n := fake.calls.Load(); n != 1 {
		t.Errorf("%d upstream calls for 11 ListVoices within the TTL, want 1", n)
	}
	// Another key is another account: its own list.
	g.Synth.ListVoices(gatewaytest.WithKey(t.Context(), "sk_another_callers_key_0000"), &speechv1.ListVoicesRequest{})
	if n := fake.calls.Load(); n != 2 {
		t.Errorf("%d upstream calls after a second key, want 2", n)
	}
}
