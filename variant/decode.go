package variant

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a problem with a variant file, placed at a line and column so that an editor can jump to it.
type Error struct {
	File   string
	Line   int
	Column int
	Key    string // dotted path of the key, such as "disk.size" or "layers[2].image"; may be empty
	Msg    string
}

func (e *Error) Error() string {
	pos := e.File
	if e.Line > 0 {
		pos = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	}
	if e.Key == "" {
		return pos + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", pos, e.Key, e.Msg)
}

// Pos is where a value was written in the variant file. Structs that embed a field `Pos Pos` get it filled
// in, so that later stages (a missing image, a missing file) can point back at the line.
type Pos struct {
	File   string `json:"-"`
	Line   int    `json:"-"`
	Column int    `json:"-"`
}

func (p Pos) errorf(key, format string, args ...any) *Error {
	return &Error{File: p.File, Line: p.Line, Column: p.Column, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// nodeDecoder is implemented by scalar types with their own syntax (sizes, file modes).
type nodeDecoder interface {
	decodeNode(n *yaml.Node) error
}

// decoder maps YAML nodes onto structs strictly: an unknown key, a duplicate key, a wrong type or a missing
// required key is an *Error at the node's position. yaml.v3's own KnownFields mode reports neither the
// column nor the dotted key, which is what a user needs to fix a spec quickly.
type decoder struct {
	file string
	pos  map[string]Pos
}

func (d *decoder) errAt(n *yaml.Node, key, format string, args ...any) *Error {
	return &Error{File: d.file, Line: n.Line, Column: n.Column, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) error {
	d.pos[key] = Pos{File: d.file, Line: n.Line, Column: n.Column}
	if n.Kind == yaml.AliasNode {
		return d.errAt(n, key, "aliases are not supported: write the value out")
	}
	if v.CanAddr() {
		if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
			if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
				return d.errAt(n, key, "want a scalar value, got %s", kindName(n))
			}
			if err := nd.decodeNode(n); err != nil {
				return d.errAt(n, key, "%v", err)
			}
			return nil
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Tag == "!!null" {
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), key)
	case reflect.Struct:
		return d.decodeStruct(n, v, key)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errAt(n, key, "want a list, got %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return d.errAt(n, key, "want a mapping, got %s", kindName(n))
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				return d.errAt(k, key+"."+k.Value, "duplicate key")
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(val, ev, key+"."+k.Value); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return d.errAt(n, key, "want %s, got %s", typeName(v.Type()), kindName(n))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if err != nil || n.Tag != "!!bool" {
			return d.errAt(n, key, "want true or false, got %q", n.Value)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil || v.OverflowInt(i) {
			return d.errAt(n, key, "want an integer, got %q", n.Value)
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		i, err := strconv.ParseUint(n.Value, 0, 64)
		if err != nil || v.OverflowUint(i) {
			return d.errAt(n, key, "want a non-negative integer, got %q", n.Value)
		}
		v.SetUint(i)
	default:
		return fmt.Errorf("variant: no decoder for %s", v.Type())
	}
	return nil
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "an integer"
	}
	return t.String()
}

type fieldInfo struct {
	index    int
	required bool
}

func structFields(t reflect.Type) (map[string]fieldInfo, []string) {
	fields := map[string]fieldInfo{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fields[name] = fieldInfo{index: i, required: strings.Contains(opts, "required")}
		names = append(names, name)
	}
	sort.Strings(names)
	return fields, names
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind != yaml.MappingNode {
		return d.errAt(n, key, "want a mapping, got %s", kindName(n))
	}
	fields, names := structFields(v.Type())
	if pf := v.FieldByName("Pos"); pf.IsValid() && pf.Type() == reflect.TypeOf(Pos{}) {
		pf.Set(reflect.ValueOf(Pos{File: d.file, Line: n.Line, Column: n.Column}))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := k.Value
		if key != "" {
			sub = key + "." + k.Value
		}
		f, ok := fields[k.Value]
		if !ok {
			return d.errAt(k, sub, "unknown key (known keys here: %s)", strings.Join(names, ", "))
		}
		if seen[k.Value] {
			return d.errAt(k, sub, "duplicate key")
		}
		seen[k.Value] = true
		if err := d.decode(val, v.Field(f.index), sub); err != nil {
			return err
		}
	}
	for _, name := range names {
		if fields[name].required && !seen[name] {
			sub := name
			if key != "" {
				sub = key + "." + name
			}
			return d.errAt(n, sub, "missing required key")
		}
	}
	return nil
}

// parseYAML decodes data into v, reporting syntax errors with the file name and line. It returns where
// each key's value was written, so that later validation can point at it.
func parseYAML(file string, data []byte, v any) (map[string]Pos, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxError(file, err)
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: file, Msg: "the file is empty: a variant needs at least name, version, arch and layers"}
	}
	d := &decoder{file: file, pos: map[string]Pos{}}
	return d.pos, d.decode(doc.Content[0], reflect.ValueOf(v).Elem(), "")
}

// syntaxError turns yaml.v3's "yaml: line N: msg" into file:N:1: msg.
func syntaxError(file string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		num, tail, ok := strings.Cut(rest, ":")
		if line, err := strconv.Atoi(num); ok && err == nil {
			return &Error{File: file, Line: line, Column: 1, Msg: "invalid YAML:" + tail}
		}
	}
	return &Error{File: file, Msg: "invalid YAML: " + msg}
}
