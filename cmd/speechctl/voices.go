package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

func voicesFlags(fs *flag.FlagSet) func(context.Context, *client, []string) error {
	language := fs.String("language", "", "only voices that speak this language (ISO code or name)")
	gender := fs.String("gender", "", "only voices of this gender")
	output := fs.String("output", "table", "table or json")
	return func(ctx context.Context, c *client, args []string) error {
		if len(args) > 0 {
			return usageError{errors.New("voices takes no arguments")}
		}
		resp, err := speechv1.NewSynthesisServiceClient(c.conn).ListVoices(ctx, &speechv1.ListVoicesRequest{Language: *language, Gender: *gender})
		if err != nil {
			return err
		}
		switch *output {
		case "json":
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, string(b))
			return nil
		case "table":
		default:
			return usageError{fmt.Errorf("--output=%q: want table or json", *output)}
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VOICE\tNAME\tLANGUAGES\tGENDER\tACCENT\tAGE\tWORD TIMINGS\tCLONE")
		for _, v := range resp.GetVoices() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetVoiceId(), v.GetDisplayName(), strings.Join(v.GetLanguageCodes(), ","),
				dash(v.GetGender()), dash(v.GetAccent()), dash(v.GetAge()), yes(v.GetCapabilities().GetWordTimestamps()), yes(v.GetIsClone()))
		}
		return tw.Flush()
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "-"
}
