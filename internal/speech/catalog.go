package speech

import (
	"context"
	"slices"
	"strings"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// ListVoices filters the voice catalog, which the upstream client caches
// and fetches once for all callers waiting on it.
func (s *Synthesis) ListVoices(ctx context.Context, req *speechv1.ListVoicesRequest) (*speechv1.ListVoicesResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	if err := contract.CheckVoiceFilters(req); err != nil {
		return nil, err
	}
	voices, err := s.up.ListVoices(ctx)
	if err != nil {
		return nil, err
	}
	lang := strings.ToLower(req.GetLanguage())
	gender := strings.ToLower(req.GetGender())
	resp := &speechv1.ListVoicesResponse{}
	for _, v := range voices {
		out := contract.Voice(v)
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

// ListPronunciationDictionaries lists the account's dictionaries.
func (s *Synthesis) ListPronunciationDictionaries(ctx context.Context, _ *speechv1.ListPronunciationDictionariesRequest) (*speechv1.ListPronunciationDictionariesResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	dicts, err := s.up.ListPronunciationDictionaries(ctx)
	if err != nil {
		return nil, err
	}
	resp := &speechv1.ListPronunciationDictionariesResponse{}
	for i := range dicts {
		resp.Dictionaries = append(resp.Dictionaries, contract.Dictionary(&dicts[i]))
	}
	return resp, nil
}

// CreatePronunciationDictionary validates every entry before creating the
// dictionary upstream.
func (s *Synthesis) CreatePronunciationDictionary(ctx context.Context, req *speechv1.CreatePronunciationDictionaryRequest) (*speechv1.CreatePronunciationDictionaryResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	items := contract.CheckEntries(&v, req.GetEntries())
	if err := v.Err(); err != nil {
		return nil, err
	}
	d, err := s.up.CreatePronunciationDictionary(ctx, items)
	if err != nil {
		return nil, err
	}
	s.dicts.changed(s.up.Account(ctx)) // audio cached with it is not reused
	return &speechv1.CreatePronunciationDictionaryResponse{Dictionary: contract.Dictionary(d)}, nil
}

// UpdatePronunciationDictionary replaces a dictionary's entries.
func (s *Synthesis) UpdatePronunciationDictionary(ctx context.Context, req *speechv1.UpdatePronunciationDictionaryRequest) (*speechv1.UpdatePronunciationDictionaryResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	contract.CheckID(&v, "id", req.GetId(), true)
	items := contract.CheckEntries(&v, req.GetEntries())
	if err := v.Err(); err != nil {
		return nil, err
	}
	d, err := s.up.UpdatePronunciationDictionary(ctx, req.GetId(), items)
	if err != nil {
		return nil, err
	}
	if d.ID == "" {
		d.ID = req.GetId()
	}
	s.dicts.changed(s.up.Account(ctx)) // audio cached with it is not reused
	return &speechv1.UpdatePronunciationDictionaryResponse{Dictionary: contract.Dictionary(d)}, nil
}

// DeletePronunciationDictionary deletes a dictionary by id.
func (s *Synthesis) DeletePronunciationDictionary(ctx context.Context, req *speechv1.DeletePronunciationDictionaryRequest) (*speechv1.DeletePronunciationDictionaryResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	contract.CheckID(&v, "id", req.GetId(), true)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.up.DeletePronunciationDictionary(ctx, req.GetId()); err != nil {
		return nil, err
	}
	s.dicts.changed(s.up.Account(ctx)) // audio cached with it is not reused
	return &speechv1.DeletePronunciationDictionaryResponse{Id: req.GetId()}, nil
}

// CreateVoiceClone checks the sample (type, size, and length for WAV)
// before uploading it for an instant clone.
func (s *Synthesis) CreateVoiceClone(ctx context.Context, req *speechv1.CreateVoiceCloneRequest) (*speechv1.CreateVoiceCloneResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	clone, err := contract.PlanClone(req)
	if err != nil {
		return nil, err
	}
	c, err := s.up.CreateVoiceClone(ctx, clone)
	if err != nil {
		return nil, err
	}
	if len(c.ModelIDs) == 0 && c.Model != "" {
		c.ModelIDs = []string{c.Model}
	}
	return &speechv1.CreateVoiceCloneResponse{VoiceClone: contract.Clone(c)}, nil
}

// ListVoiceClones lists the account's clones.
func (s *Synthesis) ListVoiceClones(ctx context.Context, _ *speechv1.ListVoiceClonesRequest) (*speechv1.ListVoiceClonesResponse, error) {
	if err := offered(s.caps.Catalog, s.caps.CatalogMissing); err != nil {
		return nil, err
	}
	clones, err := s.up.ListVoiceClones(ctx)
	if err != nil {
		return nil, err
	}
	resp := &speechv1.ListVoiceClonesResponse{}
	for i := range clones {
		resp.VoiceClones = append(resp.VoiceClones, contract.Clone(&clones[i]))
	}
	return resp, nil
}
