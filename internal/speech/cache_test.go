package speech_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/emulator"
	"github.com/speechgate/speechgate/internal/gatewaytest"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/speech"
	"github.com/speechgate/speechgate/internal/synthcache"
)

// cached starts a gateway with a synthesis cache in front of the emulator,
// splitting text into pieces of at most 40 characters.
func cached(t *testing.T) (*gatewaytest.Gateway, *emulator.Emulator) {
	t.Helper()
	cache, err := synthcache.New(synthcache.Config{Bytes: 8 << 20, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	emu := emulator.New(emulator.Options{})
	g := gatewaytest.Start(t, emu, gatewaytest.Options{Speech: func(o *speech.Options) { o.Cache, o.PieceChars = cache, 40 }})
	return g, emu
}

func synthesize(t *testing.T, g *gatewaytest.Gateway, req *speechv1.SynthesizeRequest) *gatewaytest.Synthesis {
	t.Helper()
	return gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), callerKey), g.Synth, req)
}

// TestCacheHitIsAStreamLikeAMiss: a repeated synthesis is served from the
// cache with the same audio, in the same shape (format, audio, totals),
// and says so in its totals and its log line.
func TestCacheHitIsAStreamLikeAMiss(t *testing.T) {
	t.Parallel()
	g, emu := cached(t)
	req := &speechv1.SynthesizeRequest{Text: "Thank you for calling.", VoiceId: "avery", Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000}
	miss, hit := synthesize(t, g, req), synthesize(t, g, req)
	if miss.Err != nil || hit.Err != nil {
		t.Fatal(miss.Err, hit.Err)
	}
	if emu.Stats().Requests["synthesis"] != 1 {
		t.Errorf("%d upstream syntheses for two identical calls; want 1", emu.Stats().Requests["synthesis"])
	}
	// The hit's audio is the same, in as many messages or fewer: a hit is
	// sent at memory speed, in pieces of up to 64 KiB.
	if !bytes.Equal(miss.Bytes(), hit.Bytes()) || len(hit.Audio) > len(miss.Audio) {
		t.Errorf("the hit's audio (%d bytes in %d chunks) differs from the miss's (%d in %d)", len(hit.Bytes()), len(hit.Audio), len(miss.Bytes()), len(miss.Audio))
	}
	if d := gatewaytest.Diff([]string{"format", "audio", "totals"}, hit.Order); d != "" {
		t.Errorf("the hit's messages (-want +got):\n%s", d)
	}
	if miss.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_MISS || hit.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_HIT ||
		hit.Totals.GetCachedPieces() != 1 || hit.Totals.GetUpstreamAttempts() != 0 {
		t.Errorf("totals: miss %v, hit %v", miss.Totals, hit.Totals)
	}
	if hit.Totals.GetAudioDurationMs() != miss.Totals.GetAudioDurationMs() || hit.Format.GetUpstreamRequestId() != miss.Format.GetUpstreamRequestId() {
		t.Errorf("the hit describes another synthesis: %v vs %v", hit.Totals, miss.Totals)
	}
	lines := g.Logs.Lines("Synthesize")
	if len(lines) != 2 || lines[0]["cache"] != "miss" || lines[1]["cache"] != "hit" {
		t.Errorf("log lines' cache fields: %v, %v", lines[0]["cache"], lines[1]["cache"])
	}
}

// TestLongTextIsCachedByPiece: a long prompt with one sentence changed is
// synthesized only for that sentence.
func TestLongTextIsCachedByPiece(t *testing.T) {
	t.Parallel()
	g, emu := cached(t)
	first := "Welcome to Example Bank. Your call matters. Please hold for the next agent."
	second := "Welcome to Example Bank. Your call matters a lot. Please hold for the next agent."
	if got := synthesize(t, g, &speechv1.SynthesizeRequest{Text: first, VoiceId: "avery"}); got.Err != nil || got.Totals.GetTextPieces() != 3 {
		t.Fatalf("%v, %v", got.Err, got.Totals)
	}
	got := synthesize(t, g, &speechv1.SynthesizeRequest{Text: second, VoiceId: "avery"})
	if got.Err != nil || got.Totals.GetCachedPieces() != 2 || got.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_MISS {
		t.Fatalf("one sentence changed: %v, %v; want 2 of 3 pieces cached", got.Err, got.Totals)
	}
	if n := emu.Stats().Requests["synthesis"]; n != 4 {
		t.Errorf("%d upstream syntheses; want 4 (3, then the changed sentence)", n)
	}
}

func TestCacheModes(t *testing.T) {
	t.Parallel()
	g, emu := cached(t)
	only := &speechv1.SynthesizeRequest{Text: "Press one for sales.", VoiceId: "avery", CacheMode: speechv1.CacheMode_CACHE_MODE_ONLY}
	got := synthesize(t, g, only)
	if status.Code(got.Err) != codes.NotFound || rpcerror.ReasonOf(got.Err) != rpcerror.ReasonCacheMiss || len(got.Order) != 0 {
		t.Fatalf("cache-only, not cached: %v after %v; want NOT_FOUND, CACHE_MISS, before any message", got.Err, got.Order)
	}
	if emu.Stats().Requests["synthesis"] != 0 {
		t.Error("cache-only synthesized")
	}
	synthesize(t, g, &speechv1.SynthesizeRequest{Text: "Press one for sales.", VoiceId: "avery"})
	if got := synthesize(t, g, only); got.Err != nil || got.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_HIT {
		t.Errorf("cache-only, cached: %v, %v", got.Err, got.Totals)
	}
	bypass := &speechv1.SynthesizeRequest{Text: "Press one for sales.", VoiceId: "avery", CacheMode: speechv1.CacheMode_CACHE_MODE_BYPASS}
	if got := synthesize(t, g, bypass); got.Err != nil || got.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_BYPASSED ||
		emu.Stats().Requests["synthesis"] != 2 {
		t.Errorf("bypass: %v, %v, %d syntheses; want a fresh one", got.Err, got.Totals, emu.Stats().Requests["synthesis"])
	}
}

// TestAChangedDictionaryIsANewEntry: audio made with a pronunciation
// dictionary is not reused once the dictionary changed.
func TestAChangedDictionaryIsANewEntry(t *testing.T) {
	t.Parallel()
	g, emu := cached(t)
	ctx := gatewaytest.WithKey(t.Context(), callerKey)
	d, err := g.Synth.CreatePronunciationDictionary(ctx, &speechv1.CreatePronunciationDictionaryRequest{
		Entries: []*speechv1.PronunciationEntry{{Word: "SQL", Pronunciation: "sequel"}}})
	if err != nil {
		t.Fatal(err)
	}
	req := &speechv1.SynthesizeRequest{Text: "We use SQL.", VoiceId: "avery", PronunciationDictIds: []string{d.GetDictionary().GetId()}}
	synthesize(t, g, req)
	if got := synthesize(t, g, req); got.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_HIT {
		t.Fatalf("the same dictionary: %v; want a hit", got.Totals)
	}
	if _, err := g.Synth.UpdatePronunciationDictionary(ctx, &speechv1.UpdatePronunciationDictionaryRequest{Id: d.GetDictionary().GetId(),
		Entries: []*speechv1.PronunciationEntry{{Word: "SQL", Pronunciation: "ess queue ell"}}}); err != nil {
		t.Fatal(err)
	}
	if got := synthesize(t, g, req); got.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_MISS {
		t.Errorf("after the dictionary changed: %v; want a miss", got.Totals)
	}
	if n := emu.Stats().Requests["synthesis"]; n != 2 {
		t.Errorf("%d syntheses; want 2", n)
	}
}

// TestAccountsDoNotShareEntries: by default one account never hears what
// another synthesized.
func TestAccountsDoNotShareEntries(t *testing.T) {
	t.Parallel()
	g, _ := cached(t)
	req := &speechv1.SynthesizeRequest{Text: "Your balance is low.", VoiceId: "avery"}
	synthesize(t, g, req)
	other := gatewaytest.Synthesize(gatewaytest.WithKey(t.Context(), "sk_another_account_0123456"), g.Synth, req)
	if other.Err != nil || other.Totals.GetCacheResult() != speechv1.CacheResult_CACHE_RESULT_MISS {
		t.Errorf("another account: %v, %v; want a miss", other.Err, other.Totals)
	}
	if strings.Contains(g.Logs.String(), "sk_another_account") {
		t.Error("a key reached the log")
	}
}
