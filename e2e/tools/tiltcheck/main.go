// tiltcheck runs a Tiltfile with a real Starlark interpreter (go.starlark.net), recording
// Tilt's functions instead of performing them, and checks what it would deploy against what
// the real Helm renders and what the Dockerfile builds. It also loads kind.yaml into kind's
// own config types. Tilt's binary is not available on this project's machines; this is the
// closest check of the local development loop that runs here.
//
//	tiltcheck -tiltfile Tiltfile -kind kind.yaml -helm helm
//
// It prints every problem found and exits 1 if there is one.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// blob is Tilt's Blob: YAML text.
type blob string

func (b blob) String() string        { return string(b) }
func (b blob) Type() string          { return "Blob" }
func (b blob) Freeze()               {}
func (b blob) Truth() starlark.Bool  { return len(b) > 0 }
func (b blob) Hash() (uint32, error) { return starlark.String(b).Hash() }

type build struct{ ref, dockerfile, target string }

type resource struct {
	workload, name string
	portForwards   []string
	objects        []string
	deps           []string
}

// object is one rendered Kubernetes object, with what the checks read.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Template    podTemplate `json:"template"`
		JobTemplate struct {
			Spec struct {
				Template podTemplate `json:"template"`
			} `json:"spec"`
		} `json:"jobTemplate"`
	} `json:"spec"`
}

type podTemplate struct {
	Spec struct {
		Containers []struct {
			Image string `json:"image"`
			Ports []struct {
				ContainerPort int `json:"containerPort"`
			} `json:"ports"`
		} `json:"containers"`
	} `json:"spec"`
}

var workloadKinds = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true,
	"ReplicaSet": true, "Job": true, "CronJob": true, "Pod": true}

type recorder struct {
	dir       string
	helmBin   string
	contexts  []string
	builds    []build
	yamls     []string
	resources []resource
}

func str(v starlark.Value) string {
	if s, ok := starlark.AsString(v); ok {
		return s
	}
	return ""
}

func strs(v starlark.Value) []string {
	if v == nil || v == starlark.None {
		return nil
	}
	if s, ok := starlark.AsString(v); ok {
		return []string{s}
	}
	var out []string
	if it, ok := v.(starlark.Iterable); ok {
		iter := it.Iterate()
		defer iter.Done()
		var x starlark.Value
		for iter.Next(&x) {
			out = append(out, str(x))
		}
	}
	return out
}

func (r *recorder) builtins() starlark.StringDict {
	fn := func(name string, f func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error)) *starlark.Builtin {
		return starlark.NewBuiltin(name, func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			return f(args, kw)
		})
	}
	return starlark.StringDict{
		"allow_k8s_contexts": fn("allow_k8s_contexts", func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			var ctx starlark.Value
			if err := starlark.UnpackArgs("allow_k8s_contexts", args, kw, "contexts", &ctx); err != nil {
				return nil, err
			}
			r.contexts = append(r.contexts, strs(ctx)...)
			return starlark.None, nil
		}),
		"docker_build": fn("docker_build", func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			var ref, context, dockerfile, target string
			var ignore starlark.Value
			if err := starlark.UnpackArgs("docker_build", args, kw, "ref", &ref, "context", &context,
				"dockerfile?", &dockerfile, "target?", &target, "ignore?", &ignore); err != nil {
				return nil, err
			}
			if dockerfile == "" {
				dockerfile = filepath.Join(context, "Dockerfile")
			}
			r.builds = append(r.builds, build{ref, dockerfile, target})
			return starlark.None, nil
		}),
		"blob": fn("blob", func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			var s string
			if err := starlark.UnpackArgs("blob", args, kw, "contents", &s); err != nil {
				return nil, err
			}
			return blob(s), nil
		}),
		"helm": fn("helm", func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			var path, name, namespace string
			var values, set starlark.Value
			if err := starlark.UnpackArgs("helm", args, kw, "paths", &path, "name?", &name,
				"namespace?", &namespace, "values?", &values, "set?", &set); err != nil {
				return nil, err
			}
			cmd := []string{"template", name, filepath.Join(r.dir, path), "--include-crds"}
			if namespace != "" {
				cmd = append(cmd, "--namespace", namespace)
			}
			for _, v := range strs(values) {
				cmd = append(cmd, "--values", filepath.Join(r.dir, v))
			}
			for _, s := range strs(set) {
				cmd = append(cmd, "--set", s)
			}
			var out, stderr bytes.Buffer
			c := exec.Command(r.helmBin, cmd...)
			c.Stdout, c.Stderr = &out, &stderr
			if err := c.Run(); err != nil {
				return nil, fmt.Errorf("helm(%q) does not render with the real helm: %v: %s", path, err, stderr.String())
			}
			return blob(out.String()), nil
		}),
		"k8s_yaml": fn("k8s_yaml", func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			var y starlark.Value
			if err := starlark.UnpackArgs("k8s_yaml", args, kw, "yaml", &y); err != nil {
				return nil, err
			}
			if b, ok := y.(blob); ok {
				r.yamls = append(r.yamls, string(b))
				return starlark.None, nil
			}
			for _, p := range strs(y) {
				text, err := os.ReadFile(filepath.Join(r.dir, p))
				if err != nil {
					return nil, fmt.Errorf("k8s_yaml: %v", err)
				}
				r.yamls = append(r.yamls, string(text))
			}
			return starlark.None, nil
		}),
		"k8s_resource": fn("k8s_resource", func(args starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			var workload, newName string
			var pf, objects, deps, labels starlark.Value
			if err := starlark.UnpackArgs("k8s_resource", args, kw, "workload?", &workload, "new_name?", &newName,
				"port_forwards?", &pf, "objects?", &objects, "resource_deps?", &deps, "labels?", &labels); err != nil {
				return nil, err
			}
			r.resources = append(r.resources, resource{workload, newName, strs(pf), strs(objects), strs(deps)})
			return starlark.None, nil
		}),
	}
}

// objects splits every YAML document given to k8s_yaml into objects.
func (r *recorder) objects() ([]object, error) {
	var out []object
	for _, y := range r.yamls {
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(y, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var o object
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				return nil, fmt.Errorf("a k8s_yaml document does not parse: %v", err)
			}
			if o.Kind != "" {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

// stages are the Dockerfile's `FROM ... AS name` stages.
func stages(path string) (map[string]bool, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?im)^FROM\s+\S+\s+AS\s+(\S+)`).FindAllStringSubmatch(string(text), -1) {
		out[strings.ToLower(m[1])] = true
	}
	return out, nil
}

func repository(image string) string {
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i]
	}
	return image
}

// check returns every problem with what the Tiltfile would do.
func (r *recorder) check() []string {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	objs, err := r.objects()
	if err != nil {
		return []string{err.Error()}
	}
	workloads := map[string]object{}
	for _, o := range objs {
		if workloadKinds[o.Kind] {
			workloads[o.Metadata.Name] = o
		}
	}
	// Resources: Tilt makes one per workload (by its name) unless k8s_resource renames it.
	names := map[string]bool{}
	for w := range workloads {
		names[w] = true
	}
	for _, res := range r.resources {
		if res.workload != "" {
			if _, ok := workloads[res.workload]; !ok {
				add("k8s_resource(%q): no workload of that name in the YAML (workloads: %s)", res.workload, keys(workloads))
				continue
			}
			if res.name != "" {
				delete(names, res.workload)
			}
		} else if res.name == "" {
			add("k8s_resource without a workload needs new_name")
		}
		if res.name != "" {
			names[res.name] = true
		}
	}
	for _, res := range r.resources {
		for _, sel := range res.objects {
			parts := strings.Split(sel, ":")
			if len(parts) < 2 || len(parts) > 3 {
				add("objects entry %q is not name:kind[:namespace]", sel)
				continue
			}
			found := false
			for _, o := range objs {
				if o.Metadata.Name == parts[0] && strings.EqualFold(o.Kind, parts[1]) &&
					(len(parts) == 2 || o.Metadata.Namespace == parts[2]) {
					found = true
				}
			}
			if !found {
				add("objects entry %q of resource %q matches nothing in the YAML", sel, res.name)
			}
		}
		for _, pf := range res.portForwards {
			port := pf[strings.LastIndex(pf, ":")+1:]
			w, ok := workloads[res.workload]
			if !ok {
				add("port forward %q of %q: the resource has no workload", pf, res.name)
				continue
			}
			found := false
			for _, c := range append(w.Spec.Template.Spec.Containers, w.Spec.JobTemplate.Spec.Template.Spec.Containers...) {
				for _, p := range c.Ports {
					if fmt.Sprint(p.ContainerPort) == port {
						found = true
					}
				}
			}
			if !found {
				add("port forward %q of %q: no container of %s %s listens on %s", pf, res.workload, w.Kind, w.Metadata.Name, port)
			}
		}
	}
	// resource_deps name resources, without a cycle.
	deps := map[string][]string{}
	for _, res := range r.resources {
		name := res.name
		if name == "" {
			name = res.workload
		}
		for _, d := range res.deps {
			if !names[d] {
				add("resource_deps of %q: no resource %q", name, d)
			}
		}
		deps[name] = res.deps
	}
	state := map[string]int{}
	var visit func(n string, path []string)
	visit = func(n string, path []string) {
		switch state[n] {
		case 1:
			add("resource_deps cycle: %s -> %s", strings.Join(path, " -> "), n)
			return
		case 2:
			return
		}
		state[n] = 1
		for _, d := range deps[n] {
			visit(d, append(path, n))
		}
		state[n] = 2
	}
	for n := range deps {
		visit(n, nil)
	}
	// Every image a workload runs is built by a docker_build of an existing Dockerfile stage.
	built := map[string]build{}
	for _, b := range r.builds {
		built[b.ref] = b
		st, err := stages(filepath.Join(r.dir, b.dockerfile))
		if err != nil {
			add("docker_build(%q): %v", b.ref, err)
		} else if b.target != "" && !st[strings.ToLower(b.target)] {
			add("docker_build(%q): %s has no stage %q", b.ref, b.dockerfile, b.target)
		}
	}
	for _, w := range workloads {
		for _, c := range append(w.Spec.Template.Spec.Containers, w.Spec.JobTemplate.Spec.Template.Spec.Containers...) {
			if _, ok := built[repository(c.Image)]; !ok {
				add("%s %s runs %s, which no docker_build builds", w.Kind, w.Metadata.Name, c.Image)
			}
		}
	}
	if len(r.contexts) == 0 {
		add("allow_k8s_contexts is never called: tilt up would refuse a non-local context only by its defaults")
	}
	return problems
}

func keys[V any](m map[string]V) string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return strings.Join(k, ", ")
}

// kindCluster loads kind.yaml strictly into kind's v1alpha4 types and applies kind's defaults.
func kindCluster(path string) (*v1alpha4.Cluster, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(text, &c); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return nil, fmt.Errorf("%s: kind %q apiVersion %q, want Cluster kind.x-k8s.io/v1alpha4", path, c.Kind, c.APIVersion)
	}
	v1alpha4.SetDefaultsCluster(&c)
	return &c, nil
}

func run(stdout io.Writer) error {
	tiltfile := flag.String("tiltfile", "Tiltfile", "the Tiltfile")
	kindFile := flag.String("kind", "kind.yaml", "the kind cluster config")
	helmBin := flag.String("helm", "helm", "the helm binary")
	flag.Parse()
	r := &recorder{dir: filepath.Dir(*tiltfile), helmBin: *helmBin}
	thread := &starlark.Thread{Name: "tiltfile", Print: func(_ *starlark.Thread, msg string) { fmt.Fprintln(stdout, msg) }}
	if _, err := starlark.ExecFileOptions(&syntax.FileOptions{}, thread, *tiltfile, nil, r.builtins()); err != nil {
		var e *starlark.EvalError
		if errors.As(err, &e) {
			return fmt.Errorf("%s", e.Backtrace())
		}
		return err
	}
	problems := r.check()
	cluster, err := kindCluster(*kindFile)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		want := "kind-" + cluster.Name
		allowed := false
		for _, c := range r.contexts {
			allowed = allowed || c == want
		}
		if !allowed {
			problems = append(problems, fmt.Sprintf("kind.yaml names the cluster %q, whose context %s the Tiltfile does not allow (it allows %v)", cluster.Name, want, r.contexts))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	objs, _ := r.objects()
	fmt.Fprintf(stdout, "tiltfile ok: %d docker_build, %d objects, %d k8s_resource; kind cluster %q with %d node(s)\n",
		len(r.builds), len(objs), len(r.resources), cluster.Name, len(cluster.Nodes))
	return nil
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
