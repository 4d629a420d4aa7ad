package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ToJSON renders a document given as YAML (or JSON, returned indented) as
// JSON that means the same to Parse: keys keep their order, anchors and
// merge keys are expanded, and each scalar becomes what its field takes
// (a string field keeps the text as written, "0x10" or "2001-12-14"; a
// duration stays "5s"; a number field gets the number), so that what the
// admin API shows can be applied again unchanged.
func ToJSON(data []byte) ([]byte, error) {
	if t := bytes.TrimSpace(data); len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t) {
		var out bytes.Buffer
		if err := json.Indent(&out, t, "", "  "); err != nil {
			return nil, err
		}
		out.WriteByte('\n')
		return out.Bytes(), nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if len(root.Content) == 0 {
		b.WriteString("{}")
	} else if err := writeJSONNode(&b, root.Content[0], reflect.TypeFor[Document](), 0); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// writeJSONNode writes n as JSON for a field of type t (nil: unknown, the
// YAML tags decide).
func writeJSONNode(b *bytes.Buffer, n *yaml.Node, t reflect.Type, depth int) error {
	if depth > 100 {
		return errors.New("nested too deeply")
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			b.WriteString("null")
			return nil
		}
		return writeJSONNode(b, n.Content[0], t, depth+1)
	case yaml.AliasNode:
		return writeJSONNode(b, n.Alias, t, depth+1)
	case yaml.SequenceNode:
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSONNode(b, c, et, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case yaml.MappingNode:
		pairs, err := mappingPairs(n, depth)
		if err != nil {
			return err
		}
		if t != nil && t.Kind() == reflect.Struct {
			// Decoding into a struct skips null keys.
			kept := pairs[:0:0]
			for _, p := range pairs {
				if !p.null {
					kept = append(kept, p)
				}
			}
			pairs = kept
		}
		b.WriteByte('{')
		for i, p := range pairs {
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(p.key)
			b.Write(kb)
			b.WriteByte(':')
			if err := writeJSONNode(b, p.val, fieldType(t, p.key), depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case yaml.ScalarNode:
		return writeJSONScalar(b, n, t)
	}
	return fmt.Errorf("line %d: unexpected YAML node", n.Line)
}

// textField reports whether key of struct t is free text that may be
// written as a number or a boolean (a header value, a status range): its
// field is tagged scalar:"text", which covers a list's or map's values.
func textField(t reflect.Type, key string) bool {
	if t == nil || t.Kind() != reflect.Struct {
		return false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return f.Tag.Get("scalar") == "text"
		}
	}
	return false
}

// fieldType is the type of key's value in a value of type t, nil when
// unknown.
func fieldType(t reflect.Type, key string) reflect.Type {
	if t == nil {
		return nil
	}
	switch t.Kind() {
	case reflect.Map:
		return t.Elem()
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == key {
				return f.Type
			}
		}
	}
	return nil
}

type jsonPair struct {
	key  string
	null bool // the key is YAML's null
	val  *yaml.Node
}

// mappingPairs lists a mapping's pairs in order, with those of merge keys
// ("<<") first unless the mapping sets them itself.
func mappingPairs(n *yaml.Node, depth int) ([]jsonPair, error) {
	if depth > 100 {
		return nil, errors.New("nested too deeply")
	}
	var merged, own []jsonPair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a key that is not a scalar has no JSON form", k.Line)
		}
		if k.Tag == "!!merge" {
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, src := range srcs {
				if src.Kind == yaml.AliasNode {
					src = src.Alias
				}
				if src.Kind != yaml.MappingNode {
					return nil, fmt.Errorf("line %d: a merge key needs a mapping", v.Line)
				}
				ps, err := mappingPairs(src, depth+1)
				if err != nil {
					return nil, err
				}
				merged = append(merged, ps...)
			}
			continue
		}
		own = append(own, jsonPair{k.Value, k.ShortTag() == "!!null", v})
	}
	if len(merged) == 0 {
		return own, nil
	}
	seen := map[string]bool{}
	for _, p := range own {
		seen[p.key] = true
	}
	var out []jsonPair
	for _, p := range merged {
		if !seen[p.key] {
			seen[p.key] = true
			out = append(out, p)
		}
	}
	return append(out, own...), nil
}

func writeJSONScalar(b *bytes.Buffer, n *yaml.Node, t reflect.Type) error {
	tag := n.ShortTag()
	str := func() error {
		sb, _ := json.Marshal(strings.ToValidUTF8(n.Value, "\uFFFD"))
		b.Write(sb)
		return nil
	}
	if tag == "!!null" {
		b.WriteString("null")
		return nil
	}
	if tag == "!!binary" {
		// Decoded, a binary scalar is its bytes: JSON has no tag for it.
		var v string
		if err := n.Decode(&v); err != nil {
			return err
		}
		sb, _ := json.Marshal(strings.ToValidUTF8(v, "\uFFFD"))
		b.Write(sb)
		return nil
	}
	if t != nil {
		switch {
		case t == durationType || reflect.PointerTo(t).Implements(unmarshalerType):
			// Durations and sizes take their text ("5s", "10MiB") or a
			// number.
			if tag != "!!int" {
				return str()
			}
		case t.Kind() == reflect.String:
			return str()
		case t.Kind() == reflect.Bool:
			// A bool field takes YAML 1.1's yes/no/on/off too, even
			// quoted, as the decoder does: JSON gets the bool it means.
			var v bool
			if err := n.Decode(&v); err == nil {
				b.WriteString(strconv.FormatBool(v))
				return nil
			}
		}
	}
	switch tag {
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return err
		}
		b.WriteString(strconv.FormatBool(v))
		return nil
	case "!!int":
		var v int64
		if err := n.Decode(&v); err == nil {
			b.WriteString(strconv.FormatInt(v, 10))
			return nil
		}
		var u uint64
		if err := n.Decode(&u); err != nil {
			return err
		}
		b.WriteString(strconv.FormatUint(u, 10))
		return nil
	case "!!float":
		var v float64
		if err := n.Decode(&v); err != nil {
			return err
		}
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return str() // no JSON number for it
		}
		if v == 0 && math.Signbit(v) {
			b.WriteString("-0.0") // "-0" would read back as the integer 0
			return nil
		}
		fb, _ := json.Marshal(v)
		b.Write(fb)
		return nil
	}
	return str()
}

// intRE and durationRE match what is written as an integer, and as a
// duration in time.ParseDuration's syntax.
var (
	intRE      = regexp.MustCompile(`^[-+]?(0x[0-9a-fA-F_]+|0o[0-7_]+|[0-9_]+)$`)
	durationRE = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)
)

// outOfRange says what is wrong with a scalar of the right form for an
// integer or duration field that the field cannot hold (the decoder calls
// it the wrong type, and cuts the value it quotes), or "".
func outOfRange(n *yaml.Node, t reflect.Type) string {
	switch {
	case t == durationType:
		if n.ShortTag() == "!!str" && durationRE.MatchString(n.Value) {
			if _, err := time.ParseDuration(n.Value); err != nil {
				return "out of range: " + strconv.Quote(n.Value) + " is longer than the longest duration, about 292 years"
			}
		}
		return ""
	case reflect.PointerTo(t).Implements(unmarshalerType):
		return ""
	}
	if tag := n.ShortTag(); tag != "!!int" && tag != "!!float" || !intRE.MatchString(n.Value) {
		return ""
	}
	v := strings.ReplaceAll(n.Value, "_", "")
	var err error
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		_, err = strconv.ParseInt(v, 0, t.Bits())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		_, err = strconv.ParseUint(v, 0, t.Bits())
	default:
		return ""
	}
	if errors.Is(err, strconv.ErrRange) {
		return "out of range: " + n.Value + " is beyond what the field can hold"
	}
	return ""
}

// decimalRE is an integer as the document's integer fields take it: decimal
// digits, no leading zero.
var decimalRE = regexp.MustCompile(`^[-+]?(0|[1-9][0-9]*)$`)

// notDecimal refuses an integer field's number written other than in
// decimal: the decoder reads 011 as octal (9, YAML 1.1), 0x10 as 16, 0b11
// as 3 and 1_000 as 1000, so a leading zero silently changed a value.
func notDecimal(n *yaml.Node, t reflect.Type) string {
	if n.ShortTag() != "!!int" || decimalRE.MatchString(n.Value) || t == durationType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return ""
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
	default:
		return ""
	}
	msg := "wrong spelling: write integers in plain decimal digits (got " + n.Value
	if v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err == nil {
		msg += ", which YAML reads as " + strconv.FormatInt(v, 10)
	}
	return msg + ")"
}

// laxTypes finds what the YAML decoder takes though the type is wrong:
// numbers with a fraction (2.9, 1e-3) given for integer fields and
// durations, which it would truncate (weight 2.9 becoming 2) where it
// refuses the string "3", and quoted strings given for bools ("no", 'on'),
// which it reads as YAML 1.1 booleans where it refuses "false": the same
// mistake gets the same answer. t is the type the tree at n was decoded
// into.
func laxTypes(n *yaml.Node, t reflect.Type, path string, depth int, text bool) Errors {
	if depth > 100 {
		return nil
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return nil
	}
	var es Errors
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			es = append(es, laxTypes(c, t, path, depth+1, text)...)
		}
	case yaml.AliasNode:
		es = laxTypes(n.Alias, t, path, depth+1, text)
	case yaml.SequenceNode:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, c := range n.Content {
				es = append(es, laxTypes(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1, text)...)
			}
		}
	case yaml.MappingNode:
		pairs, err := mappingPairs(n, depth)
		if err != nil {
			return nil // the decoder has said what is wrong
		}
		for _, p := range pairs {
			es = append(es, laxTypes(p.val, fieldType(t, p.key), joinPath(path, p.key), depth+1, text && t.Kind() == reflect.Map || textField(t, p.key))...)
		}
	case yaml.ScalarNode:
		if t.Kind() == reflect.Bool && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			// yaml.v3 reads a quoted "no" or 'on' into a bool (but not
			// "false"): a string is the wrong type, whichever it is.
			return Errors{&FieldError{Path: path, Line: n.Line, Msg: "wrong type: want true or false, got the string " + strconv.Quote(n.Value)}}
		}
		if t.Kind() == reflect.String && !text && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			if got := yamlKinds[strings.TrimPrefix(n.ShortTag(), "!!")]; got != "" && n.ShortTag() != "!!str" && n.ShortTag() != "!!null" {
				// yaml.v3 would make it the text as written: the
				// mirror of a quoted "3" for an integer, refused the
				// same way (a name of 5 is more likely a slip than
				// meant).
				return Errors{&FieldError{Path: path, Line: n.Line, Msg: "wrong type: want a string, got " + got + " " + n.Value + " (quote it if the text is meant)"}}
			}
		}
		if msg := notDecimal(n, t); msg != "" {
			return Errors{&FieldError{Path: path, Line: n.Line, Msg: msg}}
		}
		if msg := outOfRange(n, t); msg != "" {
			return Errors{&FieldError{Path: path, Line: n.Line, Msg: msg}}
		}
		if n.ShortTag() != "!!float" || reflect.PointerTo(t).Implements(unmarshalerType) {
			return nil
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			want := "an integer"
			if t == durationType {
				want = "a duration such as 1.5s"
			}
			es = append(es, &FieldError{Path: path, Line: n.Line, Msg: "wrong type: want " + want + ", got the number " + strconv.Quote(n.Value)})
		}
	}
	return es
}
