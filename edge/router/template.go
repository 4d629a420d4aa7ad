package router

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// segKind classifies one '/'-separated segment of a path template. The
// numeric order is the precedence order used when templates compete: a
// smaller kind is more specific.
type segKind uint8

const (
	segLiteral  segKind = iota // matches the segment text exactly
	segParam                   // {name}: exactly one non-empty segment
	segCatchAll                // {name...}: the non-empty rest of the path
)

// segment is one parsed template segment. text is the literal text for
// segLiteral and the variable name otherwise.
type segment struct {
	kind segKind
	text string
}

// Template is a parsed path template such as "/users/{id}" or
// "/files/{path...}". The same syntax is used for route paths of kind
// PathTemplate and for rewrite targets, so anything a route can capture a
// rewrite can reproduce.
//
// A Template is immutable and safe for concurrent use.
type Template struct {
	raw  string
	segs []segment
	vars []string
	// size is the length of the literal parts plus separators; Expand uses
	// it to size its buffer so it allocates exactly once.
	size int
}

// ParseTemplate parses a path template.
//
// Syntax: the template starts with '/', and is split on '/' into segments.
// A segment is either literal text (which may be empty, e.g. the trailing
// segment of "/users/") or, taking up the whole segment, a variable
// "{name}" or a catch-all "{name...}". Names match [A-Za-z_][A-Za-z0-9_]*
// and must be unique; a catch-all may only be the last segment. Braces
// anywhere else are rejected so that typos like "/users/{id" or
// "/users/id}" are caught at configuration time instead of becoming
// literals that silently never match.
func ParseTemplate(s string) (*Template, error) {
	t, err := parseTemplate(s)
	if err != nil {
		return nil, fmt.Errorf("router: template %q: %w", s, err)
	}
	return t, nil
}

// parseTemplate is ParseTemplate without the wrapping, so that New can
// attribute the error to a route index instead.
func parseTemplate(s string) (*Template, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, errors.New("must start with '/'")
	}
	t := &Template{raw: s}
	rest := s[1:]
	for i := 0; ; i++ {
		text, more, found := strings.Cut(rest, "/")
		seg, err := parseSegment(text)
		if err != nil {
			return nil, fmt.Errorf("segment %d %q: %w", i+1, text, err)
		}
		if seg.kind != segLiteral {
			for _, v := range t.vars {
				if v == seg.text {
					return nil, fmt.Errorf("duplicate variable name %q", seg.text)
				}
			}
			t.vars = append(t.vars, seg.text)
		} else {
			t.size += len(seg.text)
		}
		t.size++ // the '/' that precedes every segment
		t.segs = append(t.segs, seg)
		if !found {
			break
		}
		if seg.kind == segCatchAll {
			return nil, fmt.Errorf("catch-all {%s...} must be the last segment", seg.text)
		}
		rest = more
	}
	return t, nil
}

// parseSegment classifies a single segment of a template.
func parseSegment(text string) (segment, error) {
	if !strings.ContainsAny(text, "{}") {
		return segment{kind: segLiteral, text: text}, nil
	}
	if len(text) < 2 || text[0] != '{' || text[len(text)-1] != '}' || strings.ContainsAny(text[1:len(text)-1], "{}") {
		return segment{}, errors.New("a variable must span the whole segment, as in {name}")
	}
	name := text[1 : len(text)-1]
	kind := segParam
	if n, ok := strings.CutSuffix(name, "..."); ok {
		name, kind = n, segCatchAll
	}
	if !validVarName(name) {
		return segment{}, fmt.Errorf("invalid variable name %q: want [A-Za-z_][A-Za-z0-9_]*", name)
	}
	return segment{kind: kind, text: name}, nil
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// String returns the template text as it was parsed.
func (t *Template) String() string { return t.raw }

// Vars returns the variable names in the order they appear, catch-all
// included. The caller must not modify the returned slice.
func (t *Template) Vars() []string { return t.vars }

// Expand substitutes p into the template: {name} and {name...} are replaced
// by p.Get(name) verbatim (a missing parameter expands to the empty
// string). Values are not escaped: like the captured parameters, the
// result is a decoded path, and the caller escapes it when it builds the
// outgoing URL.
func (t *Template) Expand(p Params) string {
	n := t.size
	for _, s := range t.segs {
		if s.kind != segLiteral {
			n += len(p.Get(s.text))
		}
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range t.segs {
		b.WriteByte('/')
		if s.kind == segLiteral {
			b.WriteString(s.text)
		} else {
			b.WriteString(p.Get(s.text))
		}
	}
	return b.String()
}

// ExpandEscaped is Expand for an escaped path: p's values are taken as
// already escaped (as a request's raw path spells them), and the
// template's literal segments are escaped, so that the result decodes to
// what Expand returns for the decoded values.
func (t *Template) ExpandEscaped(p Params) string {
	var b strings.Builder
	b.Grow(2 * t.size)
	for _, s := range t.segs {
		b.WriteByte('/')
		if s.kind == segLiteral {
			b.WriteString(url.PathEscape(s.text))
		} else {
			b.WriteString(p.Get(s.text))
		}
	}
	return b.String()
}

// Param is one captured template variable.
type Param struct {
	Name, Value string
	// Off is where Value starts in the path that was matched, so that a
	// caller holding that path's escaped form can find the client's own
	// spelling of the value (an encoded slash, say).
	Off int
}

// Params are the variables captured by a template route, in template
// order.
type Params []Param

// Get returns the value of the named parameter, or "" if there is none.
// Templates are small, so a linear scan beats building a map.
func (p Params) Get(name string) string {
	for i := range p {
		if p[i].Name == name {
			return p[i].Value
		}
	}
	return ""
}
