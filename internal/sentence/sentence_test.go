package sentence_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/speechgate/speechgate/internal/sentence"
)

func texts(ps []sentence.Piece) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Text
	}
	return out
}

func TestSplit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		max  int
		want []string
	}{
		{name: "short text is one piece", text: "  Hello there.  ", max: 250, want: []string{"Hello there."}},
		{name: "sentences are packed", text: "One. Two! Three? Four.", max: 10, want: []string{"One. Two!", "Three?", "Four."}},
		{name: "a long sentence splits at a clause", text: "First part, second part, third part.", max: 20, want: []string{"First part,", "second part,", "third part."}},
		{name: "no punctuation splits between words", text: "alpha beta gamma delta", max: 11, want: []string{"alpha beta", "gamma delta"}},
		{name: "a word longer than the limit stays whole", text: "see https://example.com/a/very/long/path now", max: 10, want: []string{"see", "https://example.com/a/very/long/path", "now"}},
		{name: "decimals and abbreviations in a word are not ends", text: "Pi is 3.14 exactly. Next.", max: 20, want: []string{"Pi is 3.14 exactly.", "Next."}},
		{name: "closing quotes stay with their sentence", text: `He said "stop." Then left.`, max: 16, want: []string{`He said "stop."`, "Then left."}},
		{name: "Devanagari danda", text: "यह पहला वाक्य है। यह दूसरा है।", max: 18, want: []string{"यह पहला वाक्य है।", "यह दूसरा है।"}},
		{name: "CJK full stops need no space", text: "今日は晴れです。明日は雨です。", max: 9, want: []string{"今日は晴れです。", "明日は雨です。"}},
		{name: "empty", text: " \n ", max: 10, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if d := cmp.Diff(tt.want, texts(sentence.Split(tt.text, tt.max))); d != "" {
				t.Errorf("pieces (-want +got):\n%s", d)
			}
		})
	}
}

func TestSplitPositions(t *testing.T) {
	t.Parallel()
	text := "Ünïcode first. Second, with more words here."
	for _, p := range sentence.Split(text, 20) {
		got := string([]rune(text)[p.Start:p.End])
		if got != p.Text {
			t.Errorf("piece %q has positions %d–%d, which hold %q", p.Text, p.Start, p.End, got)
		}
	}
}

// FuzzSplit checks the promises of Split on any text: nothing is lost or
// reordered, and no piece is over the limit unless it is a single word.
func FuzzSplit(f *testing.F) {
	f.Add("One. Two, three four! Five?", 7)
	f.Add("  a  b\tc\nd. ", 1)
	f.Add("a。b，c d", 2)
	f.Fuzz(func(t *testing.T, text string, max int) {
		if max < 1 || max > 500 || !utf8.ValidString(text) {
			t.Skip()
		}
		pieces := sentence.Split(text, max)
		squash := func(s string) string { return strings.Join(strings.Fields(s), "") }
		if d := cmp.Diff(squash(text), squash(strings.Join(texts(pieces), " "))); d != "" {
			t.Fatalf("text lost or reordered (-want +got):\n%s", d)
		}
		for _, p := range pieces {
			if utf8.RuneCountInString(p.Text) > max && len(strings.Fields(p.Text)) != 1 {
				t.Fatalf("piece %q is over %d characters and not a single word", p.Text, max)
			}
			if p.Text == "" {
				t.Fatal("empty piece")
			}
		}
	})
}
