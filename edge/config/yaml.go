package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem found in a configuration document. Path names the
// field in the document ("routes[2].match.path"); Line is the 1-based line of
// that field in the YAML (or JSON) input, or 0 when it is not known.
type FieldError struct {
	Path string
	Line int
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one document, in document order.
type Errors []*FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// ErrEmpty is returned for a document with no content at all.
var ErrEmpty = errors.New("config: document is empty")

var yamlLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// DecodeStrict decodes one YAML (or JSON, which YAML includes) document into
// out. Unknown fields, wrong types and trailing documents are errors. The
// returned node is the document's root, for locating fields by path with
// LineOf. Errors are of type Errors and carry the line and, when it can be
// found, the path of the offending field.
func DecodeStrict(data []byte, out any) (*yaml.Node, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(err, data)
	}
	if root.Kind == 0 || (root.Kind == yaml.DocumentNode && len(root.Content) == 0) {
		return nil, ErrEmpty
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var es Errors
			for _, msg := range te.Errors {
				fe := &FieldError{Msg: msg}
				if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
					fe.Line, _ = strconv.Atoi(m[1])
					fe.Msg = friendlyTypeError(m[2])
					fe.Path = PathAt(&root, fe.Line)
					// Several fields may share the line (flow style): the
					// value or the name in the message says which one.
					if u := unmarshalRE.FindStringSubmatch(m[2]); u != nil {
						if p := pathOfValue(&root, fe.Line, u[1], u[2]); p != "" {
							fe.Path = p
						}
					} else if u := invalidSizeRE.FindStringSubmatch(m[2]); u != nil {
						if v, err := strconv.Unquote(u[1]); err == nil {
							if p := pathOfValue(&root, fe.Line, "str", v); p != "" {
								fe.Path = p
							}
						}
					} else if u := unknownFieldRE.FindStringSubmatch(m[2]); u != nil {
						if p := pathOfKey(&root, fe.Line, u[1]); p != "" {
							fe.Path = p
						}
					} else if u := duplicateKeyRE.FindStringSubmatch(m[2]); u != nil {
						if name, err := strconv.Unquote(u[1]); err == nil {
							if p := pathOfDuplicateKey(&root, fe.Line, name); p != "" {
								fe.Path = p
							}
						}
					}
				}
				es = append(es, fe)
			}
			return nil, es
		}
		return nil, syntaxError(err, data)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, Errors{{Msg: "more than one YAML document in the input; send exactly one"}}
	}
	if es := laxTypes(&root, reflect.TypeOf(out), "", 0); len(es) > 0 {
		return nil, es
	}
	return &root, nil
}

// syntaxError is a parse failure of data, named as the language it is
// written in: a document that starts with '{' is JSON to its author, even
// if a YAML parser read it.
func syntaxError(err error, data []byte) error {
	lang := "invalid YAML: "
	if t := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		lang = "invalid JSON: "
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	fe := &FieldError{Msg: lang + msg}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		fe.Msg = lang + m[2]
	}
	return Errors{fe}
}

var goTypeRE = regexp.MustCompile(`(?:type )?(?:config|node)\.([A-Za-z]+)`)

// friendlyTypeError rewrites yaml.v3's Go-flavoured messages ("field x not
// found in type config.Route") into ones that speak of the document.
func friendlyTypeError(msg string) string {
	if strings.HasPrefix(msg, "field ") && strings.Contains(msg, " not found in type ") {
		name := strings.TrimPrefix(msg[:strings.Index(msg, " not found in type ")], "field ")
		typ := strings.ToLower(goTypeRE.ReplaceAllString(msg[strings.Index(msg, " not found in type ")+len(" not found in type "):], "$1"))
		if typ == "config" {
			typ = "node" // node.Config is the node section
		}
		return fmt.Sprintf("unknown field %q in %s", name, typ)
	}
	if m := unmarshalRE.FindStringSubmatch(msg); m != nil {
		got := yamlKinds[m[1]]
		if got == "" {
			got = "!!" + m[1]
		}
		if m[2] != "" && (m[1] == "str" || m[1] == "int" || m[1] == "float" || m[1] == "bool") {
			got += " " + strconv.Quote(m[2])
		}
		return "wrong type: want " + wantKind(m[3]) + ", got " + got
	}
	msg = strings.Replace(msg, "cannot unmarshal", "wrong type: cannot use", 1)
	msg = goTypeRE.ReplaceAllString(msg, "$1")
	msg = strings.ReplaceAll(msg, "time.Duration", "a duration such as 1.5s")
	return msg
}

// invalidSizeRE matches ByteSize's refusal, which names the value.
var invalidSizeRE = regexp.MustCompile(`^invalid size ("(?:[^"\\]|\\.)*")`)

// unmarshalRE matches yaml.v3's "cannot unmarshal !!str `lots` into int"
// (the value is left out for lists and mappings).
var unmarshalRE = regexp.MustCompile("^cannot unmarshal !!([a-z]+)(?: `(.*)`)? into (.+)$")

var yamlKinds = map[string]string{
	"str": "the string", "int": "the integer", "float": "the number", "bool": "the boolean",
	"seq": "a list", "map": "a mapping", "null": "null", "timestamp": "a timestamp",
}

// wantKind names the Go type a YAML value was decoded into in the
// document's terms.
func wantKind(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration such as 1.5s"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	}
	if t := goTypeRE.ReplaceAllString(goType, "$1"); t != goType {
		return "a mapping (" + strings.ToLower(t) + ")"
	}
	return goType
}

// LineOf returns the line of the field named by path ("routes[2].match.path")
// in the document rooted at root, or the line of its closest existing parent,
// or 0.
func LineOf(root *yaml.Node, path string) int {
	n := root
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range splitPath(path) {
		next, keyLine := child(n, part)
		if next == nil {
			if keyLine > 0 {
				return keyLine
			}
			return line
		}
		n = next
		line = keyLine
		if line == 0 {
			line = n.Line
		}
	}
	return line
}

func splitPath(path string) []string {
	var parts []string
	for _, seg := range strings.Split(path, ".") {
		for seg != "" {
			i := strings.IndexByte(seg, '[')
			if i < 0 {
				parts = append(parts, seg)
				break
			}
			if i > 0 {
				parts = append(parts, seg[:i])
			}
			j := strings.IndexByte(seg, ']')
			if j < i {
				break
			}
			parts = append(parts, seg[i:j+1])
			seg = seg[j+1:]
		}
	}
	return parts
}

// child returns the node for one path part and the line where it is named
// (the key's line for mappings, the item's line for sequences).
func child(n *yaml.Node, part string) (*yaml.Node, int) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if strings.HasPrefix(part, "[") {
		idx, err := strconv.Atoi(strings.Trim(part, "[]"))
		if err != nil || n.Kind != yaml.SequenceNode || idx < 0 || idx >= len(n.Content) {
			return nil, 0
		}
		return n.Content[idx], n.Content[idx].Line
	}
	if n.Kind != yaml.MappingNode {
		return nil, 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == part {
			return n.Content[i+1], n.Content[i].Line
		}
	}
	return nil, 0
}

// PathAt returns the path of the deepest field that starts on line, or "".
func PathAt(root *yaml.Node, line int) string {
	if root == nil {
		return ""
	}
	var best string
	walkToLine(root, line, func(p []byte, k, v *yaml.Node) bool {
		if k != nil {
			if k.Line == line {
				best = string(p)
			}
		} else if v.Line == line && (v.Kind == yaml.ScalarNode || best == "") {
			best = string(p)
		}
		return false
	})
	return best
}

var unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type `)

// pathOfKey returns the path of the first field named name on line, or "".
func pathOfKey(root *yaml.Node, line int, name string) string {
	return findOnLine(root, line, func(k, _ *yaml.Node) bool { return k != nil && k.Value == name })
}

var duplicateKeyRE = regexp.MustCompile(`^mapping key ("(?:[^"\\]|\\.)*") already defined`)

// pathOfDuplicateKey returns the path of the key name given twice on line,
// in a mapping that starts on that line too (one-line JSON), or "": a
// mapping over several lines is found by PathAt from the line alone.
func pathOfDuplicateKey(root *yaml.Node, line int, name string) string {
	p := findOnLine(root, line, func(_, v *yaml.Node) bool {
		if v.Kind != yaml.MappingNode {
			return false
		}
		seen := 0
		for i := 0; i+1 < len(v.Content); i += 2 {
			if k := v.Content[i]; k.Value == name {
				if seen++; seen == 2 && k.Line == line {
					return true
				}
			}
		}
		return false
	})
	if p == "" {
		return ""
	}
	return joinPath(p, name)
}

// pathOfValue returns the path of the first field on line whose value is
// of YAML kind tag ("str", "seq", "map"...) and, for scalars, reads value
// (yaml.v3 cuts values longer than ten bytes to seven and "..."), or "".
func pathOfValue(root *yaml.Node, line int, tag, value string) string {
	return findOnLine(root, line, func(_, v *yaml.Node) bool {
		switch tag {
		case "seq":
			return v.Kind == yaml.SequenceNode
		case "map":
			return v.Kind == yaml.MappingNode
		}
		if v.Kind != yaml.ScalarNode {
			return false
		}
		if prefix, cut := strings.CutSuffix(value, "..."); cut && len(v.Value) > 10 {
			return strings.HasPrefix(v.Value, prefix)
		}
		return v.Value == value
	})
}

// findOnLine returns the path of the first mapping entry (k, v) or list
// element (nil, v) on line for which match is true, in document order.
func findOnLine(root *yaml.Node, line int, match func(k, v *yaml.Node) bool) string {
	var found string
	walkToLine(root, line, func(p []byte, k, v *yaml.Node) bool {
		onLine := k != nil && k.Line == line || k == nil && v.Line == line
		if onLine && match(k, v) {
			found = string(p)
			return true
		}
		return false
	})
	return found
}

// walkToLine visits, in document order, each mapping entry (key k, value
// v) and list element (k nil) of the document at root with its path,
// descending only into those that start at or before line, until visit
// returns true. The path is one buffer, extended and cut back as the walk
// goes, valid only during the call: building a string per level made a
// deeply nested document (10,000 levels of lists in 20 KB) cost seconds and
// hundreds of megabytes per error.
func walkToLine(root *yaml.Node, line int, visit func(path []byte, k, v *yaml.Node) bool) {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var path []byte
	var walk func(n *yaml.Node) bool
	walk = func(n *yaml.Node) bool {
		base := len(path)
		defer func() { path = path[:base] }()
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				path = path[:base]
				if base > 0 {
					path = append(path, '.')
				}
				path = append(path, k.Value...)
				if visit(path, k, v) || k.Line <= line && walk(v) {
					return true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				path = append(path[:base], '[')
				path = strconv.AppendInt(path, int64(i), 10)
				path = append(path, ']')
				if visit(path, nil, c) || c.Line <= line && walk(c) {
					return true
				}
			}
		}
		return false
	}
	walk(n)
}

// withLines fills in the Line of every error from the document at root.
// prefix is prepended to each path first (for a gateway document nested in a
// node file under "gateway").
func withLines(err error, root *yaml.Node, prefix string) error {
	var es Errors
	if !errors.As(err, &es) {
		return err
	}
	out := make(Errors, 0, len(es))
	for _, e := range es {
		e := *e
		if e.Line == 0 && root != nil {
			e.Line = LineOf(root, joinPath(prefix, e.Path))
		}
		out = append(out, &e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}

func joinPath(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	default:
		return prefix + "." + path
	}
}

// WithLines fills in the line of every error in err (of type Errors) whose
// line is unknown, by locating its path in raw, the document it came from;
// prefix is prepended to each path first when the document sits under a key
// of a larger file. Other errors are returned unchanged.
func WithLines(raw []byte, err error, prefix string) error {
	var es Errors
	if !errors.As(err, &es) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(raw, &root) != nil {
		return err
	}
	out := make(Errors, 0, len(es))
	for _, e := range es {
		e := *e
		e.Path = joinPath(prefix, e.Path)
		out = append(out, &e)
	}
	return withLines(out, &root, "")
}
