// Command ollama_render renders an Ollama Modelfile TEMPLATE exactly as the Ollama server does,
// with Go's own text/template, so that jinmei can compare the result byte for byte with the
// Hugging Face chat template's render (jinmei/template/ollama.py, tests/test_ollama.py).
//
// Input (stdin, JSON):
//
//	{"template": "...",              the Modelfile TEMPLATE text
//	 "system": "...",                the Modelfile SYSTEM text ("" for none)
//	 "messages": [{"role": "user", "content": "...", "thinking": "", "tool_calls": [...],
//	               "tool_name": "", "tool_call_id": ""}],      a /api/chat request's messages
//	 "prompt": "...",                instead of "messages": a /api/generate request's prompt
//	 "request_system": "...",        with "prompt": the /api/generate request's own system field
//	 "tools": [...],                 a request's tools (OpenAI function shape)
//	 "think": null | true | false | "high" | "medium" | "low",
//	 "now": "2006-01-02"}            the date currentDate/yesterdayDate see (default: today)
//
// Output (stdout): the rendered prompt, nothing else. Errors go to stderr with exit status 1.
//
// What this reproduces, from Ollama's source (github.com/ollama/ollama, read at fb30760, v0.33):
//
//   - server/routes.go ChatHandler: msgs = request messages; when the first one is not a system
//     message and the Modelfile has SYSTEM, {Role: "system", Content: SYSTEM} is put first.
//     GenerateHandler: [system: request system or SYSTEM] + [user: prompt].
//   - template/template.go Parse: missingkey=zero, the funcs json/currentDate/yesterdayDate, and
//     {{ .Response }} appended to a template that names neither .Messages nor .Response.
//   - template/template.go Execute/collate: every system message's content joined with "\n\n" is
//     .System; consecutive messages of one role (tool messages excepted) are merged into one whose
//     content is joined with "\n\n"; .Messages keeps the system messages. A template that names
//     .Messages gets {System, Messages, Tools, Response: "", Think, ThinkLevel, IsThinkSet};
//     any other template is executed once per (system, prompt, response) turn with
//     {System, Prompt, Response, Think, ThinkLevel, IsThinkSet}, the last turn cut at .Response.
//   - The message and tool shapes of convertMessagesForTemplate / convertToolsForTemplate.
//
// Not reproduced: images ([img-N] tags), Modelfile MESSAGE history, context truncation, the
// toTypeScriptType func, and the insertion order of tool argument/property maps (Go's
// encoding/json sorts map keys; Ollama keeps request order). BOS is not part of the template:
// llama-server adds it when tokenizing (see jinmei/template/ollama.py).
//
// Standard library only; Go 1.19 (Debian's golang-go) or newer.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// ---------------------------------------------------------------- request shapes (api package)

type propertyType []string

func (pt *propertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt propertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt propertyType) String() string {
	if len(pt) == 0 {
		return ""
	}
	if len(pt) == 1 {
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

type toolProperty struct {
	AnyOf       []toolProperty          `json:"anyOf,omitempty"`
	Type        propertyType            `json:"type,omitempty"`
	Items       any                     `json:"items,omitempty"`
	Description string                  `json:"description,omitempty"`
	Enum        []any                   `json:"enum,omitempty"`
	Properties  map[string]toolProperty `json:"properties,omitempty"`
	Required    []string                `json:"required,omitempty"`
}

type tool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		Parameters  struct {
			Type       string                  `json:"type"`
			Defs       any                     `json:"$defs,omitempty"`
			Items      any                     `json:"items,omitempty"`
			Required   []string                `json:"required,omitempty"`
			Properties map[string]toolProperty `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

type toolCall struct {
	ID       string `json:"id,omitempty"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type request struct {
	Template      *string         `json:"template"`
	System        string          `json:"system"`
	Messages      []message       `json:"messages"`
	Prompt        *string         `json:"prompt"`
	RequestSystem string          `json:"request_system"`
	Tools         []tool          `json:"tools"`
	Think         json.RawMessage `json:"think"`
	Now           string          `json:"now"`
}

// ---------------------------------------------------------------- template-facing shapes

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateProperties map[string]toolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateToolFunction struct {
	Name        string                         `json:"name"`
	Description string                         `json:"description"`
	Parameters  templateToolFunctionParameters `json:"parameters"`
}

type templateTool struct {
	Type     string               `json:"type"`
	Items    any                  `json:"items,omitempty"`
	Function templateToolFunction `json:"function"`
}

func (t templateTool) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateTools []templateTool

func (t templateTools) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

func convertTools(tools []tool) templateTools {
	if tools == nil {
		return nil
	}
	result := make(templateTools, len(tools))
	for i, t := range tools {
		result[i] = templateTool{
			Type:  t.Type,
			Items: t.Items,
			Function: templateToolFunction{
				Name:        t.Function.Name,
				Description: t.Function.Description,
				Parameters: templateToolFunctionParameters{
					Type:       t.Function.Parameters.Type,
					Defs:       t.Function.Parameters.Defs,
					Items:      t.Function.Parameters.Items,
					Required:   t.Function.Parameters.Required,
					Properties: templateProperties(t.Function.Parameters.Properties),
				},
			},
		}
	}
	return result
}

func convertMessages(messages []*message) []*templateMessage {
	if messages == nil {
		return nil
	}
	result := make([]*templateMessage, len(messages))
	for i, m := range messages {
		var calls []templateToolCall
		for _, tc := range m.ToolCalls {
			calls = append(calls, templateToolCall{
				ID: tc.ID,
				Function: templateToolCallFunction{
					Index:     tc.Function.Index,
					Name:      tc.Function.Name,
					Arguments: templateArgs(tc.Function.Arguments),
				},
			})
		}
		result[i] = &templateMessage{Role: m.Role, Content: m.Content, Thinking: m.Thinking,
			ToolCalls: calls, ToolName: m.ToolName, ToolCallID: m.ToolCallID}
	}
	return result
}

// ---------------------------------------------------------------- template/template.go

var now = time.Now()

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate": func(args ...string) string {
		return now.Format("2006-01-02")
	},
	"yesterdayDate": func(args ...string) string {
		return now.AddDate(0, 0, -1).Format("2006-01-02")
	},
}

var responseNode = parse.ActionNode{
	NodeType: parse.NodeAction,
	Pipe: &parse.PipeNode{
		NodeType: parse.NodePipe,
		Cmds: []*parse.CommandNode{{
			NodeType: parse.NodeCommand,
			Args:     []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}},
		}},
	},
}

func parseTemplate(s string) (*template.Template, []string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(s)
	if err != nil {
		return nil, nil, err
	}
	vars, err := templateVars(tmpl)
	if err != nil {
		return nil, nil, err
	}
	if !contains(vars, "messages") && !contains(vars, "response") {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, &responseNode)
	}
	return tmpl, vars, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func templateVars(t *template.Template) ([]string, error) {
	var vars []string
	for _, tt := range t.Templates() {
		for _, n := range tt.Root.Nodes {
			v, err := identifiers(n)
			if err != nil {
				return vars, err
			}
			vars = append(vars, v...)
		}
	}
	set := map[string]bool{}
	for _, n := range vars {
		set[strings.ToLower(n)] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

func identifiers(n parse.Node) ([]string, error) {
	switch n := n.(type) {
	case *parse.ListNode:
		var names []string
		for _, c := range n.Nodes {
			i, err := identifiers(c)
			if err != nil {
				return names, err
			}
			names = append(names, i...)
		}
		return names, nil
	case *parse.TemplateNode:
		if n.Pipe == nil {
			return nil, errors.New("undefined template specified")
		}
		return identifiers(n.Pipe)
	case *parse.ActionNode:
		if n.Pipe == nil {
			return nil, errors.New("undefined action in template")
		}
		return identifiers(n.Pipe)
	case *parse.BranchNode:
		if n.Pipe == nil {
			return nil, errors.New("undefined branch")
		}
		names, err := identifiers(n.Pipe)
		if err != nil {
			return names, err
		}
		for _, l := range []*parse.ListNode{n.List, n.ElseList} {
			if l != nil {
				i, err := identifiers(l)
				if err != nil {
					return names, err
				}
				names = append(names, i...)
			}
		}
		return names, nil
	case *parse.IfNode:
		return identifiers(&n.BranchNode)
	case *parse.RangeNode:
		return identifiers(&n.BranchNode)
	case *parse.WithNode:
		return identifiers(&n.BranchNode)
	case *parse.PipeNode:
		var names []string
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				i, err := identifiers(a)
				if err != nil {
					return names, err
				}
				names = append(names, i...)
			}
		}
		return names, nil
	case *parse.FieldNode:
		return n.Ident, nil
	case *parse.VariableNode:
		return n.Ident, nil
	}
	return nil, nil
}

// deleteNode walks the node list and deletes nodes that match the predicate (Ollama uses it to
// cut the last legacy turn at {{ .Response }}).
func deleteNode(n parse.Node, fn func(parse.Node) bool) parse.Node {
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if fn(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var nodes []parse.Node
			for _, c := range t.Nodes {
				if n := walk(c); n != nil {
					nodes = append(nodes, n)
				}
			}
			t.Nodes = nodes
			return t
		case *parse.IfNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.WithNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.RangeNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			n := walk(t.Pipe)
			if n == nil {
				return nil
			}
			t.Pipe = n.(*parse.PipeNode)
		case *parse.PipeNode:
			var commands []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if n := walk(a); n != nil {
						args = append(args, n)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				commands = append(commands, c)
			}
			if len(commands) == 0 {
				return nil
			}
			t.Cmds = commands
		}
		return n
	}
	return walk(n)
}

// collate: consecutive messages of one role (tool excepted) merge with "\n\n"; all system
// contents joined with "\n\n" are returned as the system text.
func collate(msgs []message) (string, []*message) {
	var system []string
	var collated []*message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

type thinkValue struct {
	think      bool
	thinkLevel string
	isSet      bool
}

func parseThink(raw json.RawMessage) (thinkValue, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return thinkValue{}, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		level := ""
		if b {
			level = "medium"
		}
		return thinkValue{think: b, thinkLevel: level, isSet: true}, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return thinkValue{}, fmt.Errorf("think must be null, a bool or a string, got %s", raw)
	}
	return thinkValue{think: s == "high" || s == "medium" || s == "low" || s == "max", thinkLevel: s, isSet: true}, nil
}

func execute(w io.Writer, tmpl *template.Template, vars []string, msgs []message, tools []tool, tv thinkValue) error {
	system, messages := collate(msgs)
	if contains(vars, "messages") {
		return tmpl.Execute(w, map[string]any{
			"System":     system,
			"Messages":   convertMessages(messages),
			"Tools":      convertTools(tools),
			"Response":   "",
			"Think":      tv.think,
			"ThinkLevel": tv.thinkLevel,
			"IsThinkSet": tv.isSet,
		})
	}

	system = ""
	var b bytes.Buffer
	var prompt, response string
	values := func() map[string]any {
		return map[string]any{"System": system, "Prompt": prompt, "Response": response,
			"Think": tv.think, "ThinkLevel": tv.thinkLevel, "IsThinkSet": tv.isSet}
	}
	flush := func() error {
		if err := tmpl.Execute(&b, values()); err != nil {
			return err
		}
		system, prompt, response = "", "", ""
		return nil
	}
	for _, m := range messages {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := flush(); err != nil {
					return err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := flush(); err != nil {
					return err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}

	var cut bool
	nodes := deleteNode(tmpl.Root.Copy(), func(n parse.Node) bool {
		if field, ok := n.(*parse.FieldNode); ok && contains(field.Ident, "Response") {
			cut = true
			return false
		}
		return cut
	})
	tree := parse.Tree{Root: nodes.(*parse.ListNode)}
	if err := template.Must(template.New("").AddParseTree("", &tree)).Execute(&b, values()); err != nil {
		return err
	}
	_, err := io.Copy(w, &b)
	return err
}

// ---------------------------------------------------------------- server/routes.go

func requestMessages(req request) ([]message, error) {
	if req.Prompt != nil { // GenerateHandler
		var msgs []message
		if req.RequestSystem != "" {
			msgs = append(msgs, message{Role: "system", Content: req.RequestSystem})
		} else if req.System != "" {
			msgs = append(msgs, message{Role: "system", Content: req.System})
		}
		return append(msgs, message{Role: "user", Content: *req.Prompt}), nil
	}
	if len(req.Messages) == 0 { // ChatHandler answers "load" and renders nothing
		return nil, errors.New("no messages: Ollama renders no prompt for an empty chat request")
	}
	msgs := append([]message(nil), req.Messages...)
	if msgs[0].Role != "system" && req.System != "" {
		msgs = append([]message{{Role: "system", Content: req.System}}, msgs...)
	}
	return msgs, nil
}

func run(stdin io.Reader, stdout io.Writer) error {
	var req request
	dec := json.NewDecoder(stdin)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("reading the JSON request on stdin: %w", err)
	}
	if req.Template == nil {
		return errors.New(`the request has no "template"`)
	}
	if req.Now != "" {
		t, err := time.Parse("2006-01-02", req.Now)
		if err != nil {
			return fmt.Errorf(`"now" must be YYYY-MM-DD: %w`, err)
		}
		now = t
	}
	tv, err := parseThink(req.Think)
	if err != nil {
		return err
	}
	tmpl, vars, err := parseTemplate(*req.Template)
	if err != nil {
		return fmt.Errorf("parsing the template: %w", err)
	}
	msgs, err := requestMessages(req)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := execute(&out, tmpl, vars, msgs, req.Tools, tv); err != nil {
		return fmt.Errorf("executing the template: %w", err)
	}
	_, err = stdout.Write(out.Bytes())
	return err
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ollama_render:", err)
		os.Exit(1)
	}
}
