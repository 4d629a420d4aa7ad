package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem found in a configuration document. Path names the
// field in the document ("routes[2].match.path"); Line is the 1-based line of
// that field in the YAML (or JSON) input, or 0 when it is not known.
type FieldError struct {
	Path string
	Line int
	Msg  string
	more int // for the last error of a capped list: how many are not listed
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

// yamlErrLineRE finds the line in a yaml.v3 syntax error ("yaml: line 3:
// ...").
var yamlErrLineRE = regexp.MustCompile(`line (\d+)`)

// DecodeStrict decodes one YAML (or JSON, which YAML includes) document into
// out. Unknown fields, wrong types and trailing documents are errors. The
// returned node is the document's root, for locating fields by path with
// LineOf. Errors are of type Errors and carry the line and, when it can be
// found, the path of the offending field.
func DecodeStrict(data []byte, out any) (*yaml.Node, error) {
	// One parse: the decoder's own tree is the one kept (capture), not a
	// second made beside it (a large document's tree takes some 70 times
	// its size).
	c := capture{out: out}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	if c.top.n == nil {
		// Nothing to decode: no document, an empty one, or null.
		if err == nil || err == io.EOF {
			return nil, ErrEmpty
		}
		return nil, syntaxError(err, data)
	}
	root := yaml.Node{Kind: yaml.DocumentNode, Line: 1, Column: 1, Content: []*yaml.Node{c.top.n}}
	if c.early != nil {
		return nil, CapErrors(c.early)
	}
	if err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := te.Errors
			more := 0
			if len(msgs) > MaxErrors {
				msgs, more = msgs[:MaxErrors], len(msgs)-MaxErrors
			}
			es := make(Errors, 0, len(msgs)+1)
			var ls []*lookup
			var onLine []*lookup // per error: its line's deepest field, or nil
			var exact []*lookup  // per error: the field its message names, or nil
			for _, msg := range msgs {
				fe := &FieldError{Msg: msg}
				var at, ex *lookup
				if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
					fe.Line, _ = strconv.Atoi(m[1])
					fe.Msg = friendlyTypeError(m[2])
					at = &lookup{line: fe.Line, kind: lookAt}
					// Several fields may share the line (flow style): the
					// value or the name in the message says which one.
					if u := unmarshalRE.FindStringSubmatch(m[2]); u != nil {
						ex = &lookup{line: fe.Line, kind: lookValue, tag: u[1], value: u[2]}
					} else if u := invalidSizeRE.FindStringSubmatch(m[2]); u != nil {
						if v, err := strconv.Unquote(u[1]); err == nil {
							ex = &lookup{line: fe.Line, kind: lookValue, tag: "str", value: v}
						}
					} else if u := unknownFieldRE.FindStringSubmatch(m[2]); u != nil {
						ex = &lookup{line: fe.Line, kind: lookKey, name: u[1]}
					} else if u := duplicateKeyRE.FindStringSubmatch(m[2]); u != nil {
						if name, err := strconv.Unquote(u[1]); err == nil {
							ex = &lookup{line: fe.Line, kind: lookDuplicateKey, name: name}
						}
					}
				}
				for _, l := range []*lookup{at, ex} {
					if l != nil {
						ls = append(ls, l)
					}
				}
				onLine, exact = append(onLine, at), append(exact, ex)
				es = append(es, fe)
			}
			locate(&root, ls)
			aliasHints(&root, es)
			named := make(map[string]bool, len(es))
			for i, fe := range es {
				if exact[i] != nil && exact[i].path != "" {
					fe.Path = exact[i].path
				} else if onLine[i] != nil {
					fe.Path = onLine[i].path
				}
				named[fe.Path] = true
			}
			// The types the decoder lets through (a quoted "no" for a
			// bool, 2.5 for an integer) are of the same stage: reported
			// with its other errors, not only once those are fixed.
			if more == 0 {
				for _, e := range laxTypes(&root, reflect.TypeOf(out), "", 0, false) {
					if !named[e.Path] {
						es = append(es, e)
					} else if strings.HasPrefix(e.Msg, "out of range") {
						// Said better than the decoder's "wrong type".
						for _, fe := range es {
							if fe.Path == e.Path {
								fe.Msg = e.Msg
							}
						}
					}
				}
				sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
				return nil, CapErrors(es)
			}
			// Past the cap the types the decoder let through are
			// counted with the rest, not listed.
			for _, e := range laxTypes(&root, reflect.TypeOf(out), "", 0, false) {
				if !named[e.Path] {
					more++
				}
			}
			return nil, append(es, moreErrors(more))
		}
		return nil, syntaxError(err, data)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		fe := &FieldError{Msg: "more than one YAML document in the input; send exactly one"}
		if err == nil && len(extra.Content) > 0 {
			fe.Line = extra.Content[0].Line
		} else if m := yamlErrLineRE.FindStringSubmatch(fmt.Sprint(err)); m != nil {
			fe.Line, _ = strconv.Atoi(m[1])
		}
		if t := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
			fe.Msg = "content after the JSON document ends; send exactly one document"
			i, isJSON := afterFlow(data)
			if !isJSON {
				fe.Msg = "content after the document's closing bracket; send exactly one document"
			}
			if i >= 0 {
				fe.Line = lineOf(data, i) // the parser's line is where it gave up
			}
		}
		return nil, Errors{fe}
	}
	if es := laxTypes(&root, reflect.TypeOf(out), "", 0, false); len(es) > 0 {
		return nil, CapErrors(es)
	}
	return &root, nil
}

// capture, decoded into by a strict decoder, keeps the document's top node
// as that decoder parsed it, checks its mappings (checkMappings) and then
// decodes it into out with the same decoder, unknown fields refused. The
// older form of yaml.v3's Unmarshaler is the one whose decoding function
// is the decoder's own (the newer one's Node.Decode is not strict).
type capture struct {
	out   any
	top   nodeGrab
	early Errors // checkMappings' refusal; out not decoded
}

// nodeGrab keeps the node it is decoded from.
type nodeGrab struct{ n *yaml.Node }

func (g *nodeGrab) UnmarshalYAML(n *yaml.Node) error {
	g.n = n
	return nil
}

var errRefused = errors.New("config: refused before decoding")

func (c *capture) UnmarshalYAML(unmarshal func(any) error) error {
	if err := unmarshal(&c.top); err != nil {
		return err
	}
	if es, early := checkMappings(c.top.n); early {
		c.early = es
		return errRefused
	}
	return unmarshal(c.out)
}

// aliasHints adds to each error on a line of an anchored value that an
// alias uses elsewhere where those uses are: the decoder reports a value
// by the line it is written on, so a value right where it is anchored
// (targets: &t [...]) but of the wrong type where an alias puts it
// (methods: *t) is reported at the anchor.
func aliasHints(root *yaml.Node, es Errors) {
	type span struct {
		node       *yaml.Node
		first, end int
	}
	var anchored []span
	uses := map[*yaml.Node][]int{}
	var walk func(n *yaml.Node, depth int) int // the last line under n
	walk = func(n *yaml.Node, depth int) int {
		last := n.Line
		if depth > 10000 {
			return last
		}
		if n.Kind == yaml.AliasNode {
			if n.Alias != nil {
				uses[n.Alias] = append(uses[n.Alias], n.Line)
			}
			return last
		}
		for _, c := range n.Content {
			last = max(last, walk(c, depth+1))
		}
		if n.Anchor != "" {
			anchored = append(anchored, span{n, n.Line, last})
		}
		return last
	}
	walk(root, 0)
	if len(uses) == 0 {
		return
	}
	for _, fe := range es {
		for _, a := range anchored {
			lines := slices.Compact(slices.Clone(uses[a.node])) // in document order: a line once
			if len(lines) == 0 || fe.Line < a.first || fe.Line > a.end {
				continue
			}
			var at []string
			for _, l := range lines[:min(len(lines), 5)] {
				at = append(at, strconv.Itoa(l))
			}
			more := ""
			if len(lines) > 5 {
				more = fmt.Sprintf(" and %d more", len(lines)-5)
			}
			fe.Msg += fmt.Sprintf(" (the value is anchored as &%s, used through *%s on line %s%s: the error may be where it is used)",
				a.node.Anchor, a.node.Anchor, strings.Join(at, ", "), more)
			break
		}
	}
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
		if hint, ok := parserProblem(m[2]); ok {
			// The parser's (not the scanner's) lines count from 0, and
			// name where the collection the problem is in begins, when
			// that is past the first line (else where the problem is).
			fe.Line++
			fe.Msg += hint
			if strings.HasPrefix(hint, " (in the list or map") {
				if l := unclosedFlow(data); l > 0 {
					fe.Line = l
				}
			}
		}
	} else if i := badByte(data); i >= 0 && !bytes.HasPrefix(data, []byte{0xff, 0xfe}) && !bytes.HasPrefix(data, []byte{0xfe, 0xff}) {
		// The reader refuses these before it counts lines: find the byte
		// (in UTF-8; UTF-16 input, which it also reads, is left as is).
		fe.Line = lineOf(data, i)
	}
	return Errors{fe}
}

// unclosedFlow is the line of the innermost flow list or map ('[' or '{')
// that data leaves open, or 0: the one the parser was in when the document
// ended, which it names only when it is past the first line.
func unclosedFlow(data []byte) int {
	var open []int // lines of the open brackets
	line, quote, comment := 1, byte(0), false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '\n':
			line++
			comment = false
			if quote == 0 {
				continue
			}
		case comment:
		case quote == '"' && c == '\\':
			i++ // an escape
		case quote != 0:
			if c == quote {
				if quote == '\'' && i+1 < len(data) && data[i+1] == '\'' {
					i++ // '' is a quote in a single-quoted string
				} else {
					quote = 0
				}
			}
		case c == '#' && (i == 0 || data[i-1] == ' ' || data[i-1] == '\t' || data[i-1] == '\n'):
			comment = true
		case c == '"' || c == '\'':
			if i == 0 || strings.IndexByte(" \t\n[{,:", data[i-1]) >= 0 {
				quote = c
			}
		case c == '[' || c == '{':
			open = append(open, line)
		case (c == ']' || c == '}') && len(open) > 0:
			open = open[:len(open)-1]
		}
	}
	if len(open) == 0 {
		return 0
	}
	return open[len(open)-1]
}

// parserProblem reports whether msg is one of the YAML parser's problems
// (the scanner's lines are right as they are), with a hint to add to it.
func parserProblem(msg string) (hint string, ok bool) {
	switch {
	case msg == "did not find expected '-' indicator" || msg == "did not find expected key":
		return " (on this line or below it, in the block that begins here: check the indentation)", true
	case msg == "did not find expected ',' or ']'" || msg == "did not find expected ',' or '}'":
		return " (in the list or map opened on this line)", true
	case strings.HasPrefix(msg, "did not find expected"), strings.HasPrefix(msg, "found undefined tag handle"),
		strings.HasPrefix(msg, "found duplicate %"), strings.HasPrefix(msg, "found incompatible YAML document"):
		return "", true
	}
	return "", false
}

// afterFlow is the offset of the first content (past white space and
// comments) after the document data starts with, a JSON value or a YAML
// flow collection ('{' or '['), or -1; isJSON says it was JSON.
func afterFlow(data []byte) (at int, isJSON bool) {
	start := len(data) - len(bytes.TrimLeft(data, " \t\r\n\ufeff"))
	end := -1
	dec := json.NewDecoder(bytes.NewReader(data[start:]))
	var v json.RawMessage
	if dec.Decode(&v) == nil {
		end, isJSON = start+int(dec.InputOffset()), true
	} else {
		end = flowEnd(data, start)
	}
	if end < 0 {
		return -1, isJSON
	}
	for i := end; i < len(data); i++ {
		switch c := data[i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case c == '#':
			for i < len(data) && data[i] != '\n' && data[i] != '\r' {
				i++
			}
		default:
			return i, isJSON
		}
	}
	return -1, isJSON
}

// flowEnd is the offset just past the flow collection that opens at
// data[start], or -1 if it is not closed: brackets inside quoted scalars
// and comments do not count.
func flowEnd(data []byte, start int) int {
	depth := 0
	for i := start; i < len(data); i++ {
		switch c := data[i]; c {
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1
			}
		case '"':
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case '\'':
			for i++; i < len(data); i++ {
				if data[i] == '\'' {
					if i+1 < len(data) && data[i+1] == '\'' {
						i++ // '' is a quote inside
						continue
					}
					break
				}
			}
		case '#':
			if i == start || data[i-1] == ' ' || data[i-1] == '\t' || data[i-1] == '\n' || data[i-1] == '\r' {
				for i < len(data) && data[i] != '\n' && data[i] != '\r' {
					i++
				}
			}
		}
	}
	return -1
}

// lineOf is the line of data[i], counting line breaks as YAML does: LF, CR
// LF, or a CR alone.
func lineOf(data []byte, i int) int {
	line := 1 + bytes.Count(data[:i], []byte{'\n'})
	for j, c := range data[:i] {
		if c == '\r' && (j+1 >= len(data) || data[j+1] != '\n') {
			line++
		}
	}
	return line
}

// badByte is the offset of the first byte YAML does not allow in a
// document (a control character other than tab, LF and CR, or a byte that
// is not UTF-8; a BOM or NEL aside), or -1.
func badByte(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			return i
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f:
			return i
		}
		i += n
	}
	return -1
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
	l := &lookup{line: line, kind: lookAt}
	locate(root, []*lookup{l})
	return l.path
}

var unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type `)

var duplicateKeyRE = regexp.MustCompile(`^mapping key ("(?:[^"\\]|\\.)*") already defined`)

// lookup is a field to find on one line of a document, for an error the
// decoder reported with only the line; path is the answer, "" if none.
type lookup struct {
	line int
	kind lookupKind
	// lookKey and lookDuplicateKey: the field's name. lookValue: the
	// value's YAML kind ("str", "seq", "map"...) and, for scalars, what it
	// reads (yaml.v3 cuts values longer than ten bytes to seven and "...").
	name, tag, value string
	path             string
}

type lookupKind int

const (
	// lookAt: the deepest field that starts on the line.
	lookAt lookupKind = iota
	// lookKey: the field named name.
	lookKey
	// lookValue: the field whose value is of kind tag and reads value.
	lookValue
	// lookDuplicateKey: the key name given twice on the line, in a
	// mapping that starts there too (one-line JSON); its path ends in
	// name. A mapping over several lines is found by lookAt.
	lookDuplicateKey
)

// locate answers every lookup in one walk of the document at root, in
// document order. Lookups of one line and kind that name the same thing
// (two unknown fields "u" in one line of flow style) take its places on the
// line in turn, as the decoder reports its errors in document order. One
// walk for all of them: a walk per error made a document with many errors
// cost time in the square of its size (a 269 KB one took five seconds).
func locate(root *yaml.Node, ls []*lookup) {
	if len(ls) == 0 {
		return
	}
	type queueKey struct {
		line int
		kind lookupKind
		// name for lookKey and lookDuplicateKey; "seq", "map" or ""
		// (any scalar) for lookValue.
		name string
	}
	atLines := map[int]bool{}          // lines with lookAt lookups
	best := map[int]string{}           // their answer, line by line
	queues := map[queueKey][]*lookup{} // the others, waiting in order
	dups := false
	for _, l := range ls {
		switch l.kind {
		case lookAt:
			atLines[l.line] = true
			continue
		case lookValue:
			t := l.tag
			if t != "seq" && t != "map" {
				t = ""
			}
			k := queueKey{l.line, l.kind, t}
			queues[k] = append(queues[k], l)
		default:
			dups = dups || l.kind == lookDuplicateKey
			k := queueKey{l.line, l.kind, l.name}
			queues[k] = append(queues[k], l)
		}
	}
	// take gives path p to the first of the lookups waiting under key that
	// match accepts, looking at a few only: one the document does not
	// hold as reported must not make the walk quadratic.
	take := func(key queueKey, p []byte, match func(*lookup) bool) {
		q := queues[key]
		for i := 0; i < len(q) && i < 8; i++ {
			if match(q[i]) {
				q[i].path = string(p)
				queues[key] = append(q[:i:i], q[i+1:]...)
				return
			}
		}
	}
	always := func(*lookup) bool { return true }
	walkAll(root, func(p []byte, k, v *yaml.Node) {
		line := v.Line
		if k != nil {
			line = k.Line
		}
		if atLines[line] {
			// The deepest field on the line: a key, or a list element
			// that is a scalar or the first thing found on the line.
			if k != nil || v.Kind == yaml.ScalarNode || best[line] == "" {
				best[line] = string(p)
			}
		}
		if len(queues) == 0 {
			return
		}
		if k != nil {
			take(queueKey{line, lookKey, k.Value}, p, always)
		}
		switch v.Kind {
		case yaml.SequenceNode:
			take(queueKey{line, lookValue, "seq"}, p, always)
		case yaml.MappingNode:
			take(queueKey{line, lookValue, "map"}, p, always)
		case yaml.ScalarNode:
			take(queueKey{line, lookValue, ""}, p, func(l *lookup) bool {
				if prefix, cut := strings.CutSuffix(l.value, "..."); cut && len(v.Value) > 10 {
					return strings.HasPrefix(v.Value, prefix)
				}
				return v.Value == l.value
			})
		}
		if dups && v.Kind == yaml.MappingNode {
			// A key given a second time on the line where this mapping
			// starts.
			var seen map[string]bool
			for i := 0; i+1 < len(v.Content); i += 2 {
				key := v.Content[i]
				if key.Line != line {
					continue
				}
				if seen == nil {
					seen = map[string]bool{}
				}
				if seen[key.Value] {
					take(queueKey{line, lookDuplicateKey, key.Value}, p, always)
				}
				seen[key.Value] = true
			}
		}
	})
	for _, l := range ls {
		switch {
		case l.kind == lookAt:
			l.path = best[l.line]
		case l.kind == lookDuplicateKey && l.path != "":
			// A duplicate key's path names the key in its mapping.
			l.path = joinPath(l.path, l.name)
		}
	}
}

// MaxMappingKeys is the most keys one mapping of a document may have. No
// field of the configuration has that many (the largest, a header edit
// list, is bounded by what a request can carry); the decoder compares every
// key of a mapping with every other, so a mapping of 200,000 keys kept a
// core busy for minutes.
const MaxMappingKeys = 256

// checkMappings looks, before the decoder does, for mappings with too many
// keys, for tags outside YAML's core schema, and for keys given twice, in
// linear time: the decoder's own check
// reports every pair of equal keys, so a key given 5,000 times made 12.5
// million errors. early says the document must be refused with es alone:
// a mapping too large, a key given three times or more, or more repeats
// than are reported. A few keys given twice are left to the decoder, which
// reports them as es would, beside the other errors of its stage.
func checkMappings(root *yaml.Node) (es Errors, early bool) {
	check := func(path []byte, m *yaml.Node) {
		if len(m.Content)/2 > MaxMappingKeys {
			es = append(es, &FieldError{Path: string(path), Line: m.Line,
				Msg: fmt.Sprintf("a mapping of %d keys; at most %d are taken", len(m.Content)/2, MaxMappingKeys)})
			early = true
			return
		}
		type seen struct{ line, times int }
		first := make(map[string]*seen, len(m.Content)/2)
		for i := 0; i+1 < len(m.Content); i += 2 {
			k := m.Content[i]
			if k.Kind != yaml.ScalarNode {
				continue // a complex key: left to the decoder
			}
			if k.ShortTag() == "!!merge" && !mergeable(m.Content[i+1]) {
				// The decoder says so too, but without a line.
				es = append(es, &FieldError{Path: string(path), Line: k.Line,
					Msg: "a merge key (<<) takes a mapping, an alias of one, or a list of them"})
				early = true
			}
			f := first[k.Value]
			if f == nil {
				first[k.Value] = &seen{line: k.Line, times: 1}
				continue
			}
			if f.times++; f.times > 2 {
				early = true
			}
			es = append(es, &FieldError{Path: joinPath(string(path), k.Value), Line: k.Line,
				Msg: fmt.Sprintf("mapping key %q already defined at line %d", k.Value, f.line)})
		}
	}
	top := root
	if top.Kind == yaml.DocumentNode && len(top.Content) > 0 {
		top = top.Content[0]
	}
	if top.Kind == yaml.MappingNode {
		check(nil, top)
	}
	tagged := func(path []byte, n *yaml.Node) {
		if n != nil && n.Style&yaml.TaggedStyle != 0 && !coreTags[n.ShortTag()] {
			es = append(es, &FieldError{Path: string(path), Line: n.Line,
				Msg: fmt.Sprintf("YAML tag %s is not taken (only !!str, !!int, !!float, !!bool, !!null, !!map and !!seq)", n.Tag)})
			early = true
		}
	}
	tagged(nil, top)
	walkAll(root, func(p []byte, k, v *yaml.Node) {
		tagged(p, k)
		tagged(p, v)
		if v.Kind == yaml.MappingNode {
			check(p, v)
		}
	})
	return es, early || len(es) > MaxErrors
}

// mergeable reports whether v may be the value of a merge key: a mapping
// or a list of mappings, each possibly an alias of one.
func mergeable(v *yaml.Node) bool {
	mapping := func(n *yaml.Node) bool {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		return n.Kind == yaml.MappingNode
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			if !mapping(e) {
				return false
			}
		}
		return true
	}
	return mapping(v)
}

// coreTags are the YAML tags a document may write: the core schema's.
// The decoder would take others silently (a !!binary name decoded from
// base64, an application's own !tag dropped).
var coreTags = map[string]bool{"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true, "!!map": true, "!!seq": true}

// MaxErrors is the most errors a document is refused with; past it, a last
// one says how many more there were. Nobody reads ten thousand, and a
// document that big with mistakes all through would otherwise be answered
// with an error list larger than itself.
const MaxErrors = 100

// CapErrors keeps the first MaxErrors of es and says how many more (with
// those es already says, in a last error from moreErrors). An error given
// twice (a value an alias repeats, reported where it is written) is kept
// once.
func CapErrors(es Errors) Errors {
	extra := 0
	if n := len(es); n > 0 && es[n-1].more > 0 {
		extra, es = es[n-1].more, es[:n-1]
	}
	if len(es) > 1 {
		type key struct {
			line       int
			path, text string
		}
		seen := make(map[key]bool, len(es))
		kept := es[:0:0]
		for _, e := range es {
			if k := (key{e.Line, e.Path, e.Msg}); !seen[k] {
				seen[k] = true
				kept = append(kept, e)
			}
		}
		es = kept
	}
	if len(es) > MaxErrors {
		extra += len(es) - MaxErrors
		es = es[:MaxErrors:MaxErrors]
	}
	if extra > 0 {
		es = append(es, moreErrors(extra))
	}
	return es
}

func moreErrors(n int) *FieldError {
	return &FieldError{Msg: fmt.Sprintf("and %d more errors, not listed (the first %d are)", n, MaxErrors), more: n}
}

// walkAll visits, in document order, each mapping entry (key k, value v)
// and list element (k nil) of the document at root with its path. The path
// is one buffer, extended and cut back as the walk goes, valid only during
// the call: building a string per level made a deeply nested document
// (10,000 levels of lists in 20 KB) cost seconds and hundreds of megabytes.
// Aliases are not followed.
func walkAll(root *yaml.Node, visit func(path []byte, k, v *yaml.Node)) {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var path []byte
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
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
				visit(path, k, v)
				walk(v)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				path = append(path[:base], '[')
				path = strconv.AppendInt(path, int64(i), 10)
				path = append(path, ']')
				visit(path, nil, c)
				walk(c)
			}
		}
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
	var more *FieldError // the count of those not listed stays last
	if n := len(es); n > 0 && es[n-1].more > 0 {
		more, es = es[n-1], es[:n-1]
	}
	out := make(Errors, 0, len(es)+1)
	for _, e := range es {
		e := *e
		if e.Line == 0 && root != nil {
			e.Line = LineOf(root, joinPath(prefix, e.Path))
		}
		out = append(out, &e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	if more != nil {
		out = append(out, more)
	}
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
	if es, ok := withLines(out, &root, "").(Errors); ok {
		return CapErrors(es)
	}
	return out
}
