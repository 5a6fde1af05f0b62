package deploy

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// render builds a kustomization the way kubectl apply -k does (kustomize's own library, no
// kubectl needed) and returns each object's YAML.
func render(t *testing.T, dir string) [][]byte {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out [][]byte
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, y)
	}
	return out
}

// kubeDecoder decodes strictly (unknown or duplicate fields are errors, as the API server's
// fieldValidation=Strict) into the Kubernetes API types and the Prometheus Operator's.
var kubeDecoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// objects is a rendered kustomization, by kind, each decoded strictly.
type objects struct {
	dir         string
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	pvcs        []*corev1.PersistentVolumeClaim
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	monitors    []*monitoringv1.ServiceMonitor
}

func decodeKube(t *testing.T, dir string) *objects {
	t.Helper()
	o := &objects{dir: dir}
	for _, y := range render(t, dir) {
		obj, gvk, err := kubeDecoder.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %v\n%s", dir, err, y)
			continue
		}
		switch v := obj.(type) {
		case *appsv1.Deployment:
			o.deployments = append(o.deployments, v)
		case *corev1.Service:
			o.services = append(o.services, v)
		case *corev1.ConfigMap:
			o.configMaps = append(o.configMaps, v)
		case *corev1.PersistentVolumeClaim:
			o.pvcs = append(o.pvcs, v)
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.hpas = append(o.hpas, v)
		case *monitoringv1.ServiceMonitor:
			o.monitors = append(o.monitors, v)
		default:
			t.Errorf("%s: unexpected object %s", dir, gvk)
		}
	}
	return o
}

func one[T any](t *testing.T, dir, kind string, list []T) T {
	t.Helper()
	if len(list) != 1 {
		t.Fatalf("%s: %d %s objects, want 1", dir, len(list), kind)
	}
	return list[0]
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// portOf resolves a probe's or a Service's port (number or name) against the container.
func portOf(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

func checkProbe(t *testing.T, what string, c corev1.Container, p *corev1.Probe, path string, port int32) {
	t.Helper()
	switch {
	case p == nil:
		t.Errorf("container %s: no %s probe", c.Name, what)
	case p.HTTPGet == nil:
		t.Errorf("container %s: the %s probe is not an HTTP GET", c.Name, what)
	case p.HTTPGet.Path != path || portOf(c, p.HTTPGet.Port) != port:
		t.Errorf("container %s: the %s probe asks %s on port %s, want %s on %d", c.Name, what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path, port)
	}
}

// envOf gives the container's environment as policyd would see it; a resourceFieldRef is
// resolved against the container's resources (divisor 1: rounded up, as the kubelet does).
func envOf(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ResourceFieldRef != nil:
			ref := e.ValueFrom.ResourceFieldRef
			if ref.ContainerName != "" && ref.ContainerName != c.Name {
				t.Errorf("env %s: resourceFieldRef names container %q, not %q", e.Name, ref.ContainerName, c.Name)
			}
			kind, name, _ := strings.Cut(ref.Resource, ".")
			list := c.Resources.Limits
			if kind == "requests" {
				list = c.Resources.Requests
			}
			q, ok := list[corev1.ResourceName(name)]
			if !ok {
				t.Errorf("env %s: the container sets no %s (the kubelet would give the node's capacity)", e.Name, ref.Resource)
				continue
			}
			div := resource.MustParse("1")
			if !ref.Divisor.IsZero() {
				div = ref.Divisor
			}
			env[e.Name] = strconv.FormatInt((q.MilliValue()+div.MilliValue()-1)/div.MilliValue(), 10)
		default:
			t.Errorf("env %s: a source this test cannot resolve", e.Name)
		}
	}
	return env
}

type overlay struct {
	dir string
	gpu bool
}

var overlays = []overlay{
	{"kubernetes/overlays/cpu", false},
	{"kubernetes/overlays/gpu", true},
}

func TestKubernetesOverlays(t *testing.T) {
	for _, ov := range overlays {
		t.Run(filepath.Base(ov.dir), func(t *testing.T) { checkOverlay(t, ov) })
	}
}

func checkOverlay(t *testing.T, ov overlay) {
	o := decodeKube(t, ov.dir)
	dep := one(t, ov.dir, "Deployment", o.deployments)
	svc := one(t, ov.dir, "Service", o.services)
	cm := one(t, ov.dir, "ConfigMap", o.configMaps)
	pvc := one(t, ov.dir, "PersistentVolumeClaim", o.pvcs)
	pdb := one(t, ov.dir, "PodDisruptionBudget", o.pdbs)
	hpa := one(t, ov.dir, "HorizontalPodAutoscaler", o.hpas)
	sm := one(t, ov.dir, "ServiceMonitor", o.monitors)
	for _, meta := range []string{dep.Name, svc.Name, cm.Name, pvc.Name, pdb.Name, hpa.Name, sm.Name} {
		if errs := validation.IsDNS1123Subdomain(meta); len(errs) > 0 {
			t.Errorf("name %q: %v", meta, errs)
		}
	}
	pod := dep.Spec.Template
	podLabels := labels.Set(pod.Labels)

	// selectors: the Deployment's, the Service's, the PDB's and the ServiceMonitor's
	sel, err := selectorOf(dep.Spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("the Deployment's selector %v does not select its own pods %v (%v)", dep.Spec.Selector, pod.Labels, err)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("the Service's selector %v does not select the pods %v", svc.Spec.Selector, pod.Labels)
	}
	if s, err := selectorOf(pdb.Spec.Selector); err != nil || !s.Matches(podLabels) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select the pods %v (%v)", pdb.Spec.Selector, pod.Labels, err)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("the PodDisruptionBudget bounds nothing")
	}
	if s, err := selectorOf(&sm.Spec.Selector); err != nil || !s.Matches(labels.Set(svc.Labels)) {
		t.Errorf("the ServiceMonitor's selector %v does not select the Service's labels %v (%v)", sm.Spec.Selector, svc.Labels, err)
	}

	c := container(t, pod.Spec, "policyd")
	const port, grpcPort = 8000, 8001
	checkProbe(t, "liveness", c, c.LivenessProbe, "/v2/health/live", port)
	checkProbe(t, "startup", c, c.StartupProbe, "/v2/health/live", port)
	checkProbe(t, "readiness", c, c.ReadinessProbe, "/v2/health/ready", port)
	svcPorts := map[string]corev1.ServicePort{}
	for _, sp := range svc.Spec.Ports {
		svcPorts[sp.Name] = sp
	}
	if sp, ok := svcPorts["http"]; len(svc.Spec.Ports) != 2 || !ok || portOf(c, sp.TargetPort) != port {
		t.Errorf("the Service's ports %+v do not reach the container's port %d by the name http (and gRPC's by grpc)", svc.Spec.Ports, port)
	}
	// gRPC: a container port named grpc, which the Service publishes as grpc and marks as
	// plain-text HTTP/2 (appProtocol), so that a mesh or a gateway proxies it as such
	if portOf(c, intstr.FromString("grpc")) != grpcPort {
		t.Errorf("container ports %+v: want grpc, %d", c.Ports, grpcPort)
	}
	if sp, ok := svcPorts["grpc"]; !ok || portOf(c, sp.TargetPort) != grpcPort || sp.Port != grpcPort {
		t.Errorf("the Service's ports %+v do not publish the container's gRPC port %d as grpc, port %d", svc.Spec.Ports, grpcPort, grpcPort)
	} else if sp.AppProtocol == nil || (*sp.AppProtocol != "kubernetes.io/h2c" && *sp.AppProtocol != "grpc") {
		t.Errorf("the Service's port grpc: appProtocol %v, want kubernetes.io/h2c (gRPC is plain-text HTTP/2)", sp.AppProtocol)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
		var got []string
		for _, e := range sm.Spec.Endpoints {
			got = append(got, "port "+e.Port+" path "+e.Path)
		}
		t.Errorf("the ServiceMonitor scrapes %v: want the Service's port \"http\", path /metrics", got)
	}

	// security: non-root (the images' user), no privilege, read-only root file system
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != imageUID {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and runAsUser %d (the images' USER)", psc, imageUID)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod securityContext: want seccompProfile RuntimeDefault")
	}
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want readOnlyRootFilesystem, no privilege escalation, drop ALL", csc)
	}

	// resources: requests and limits of CPU and memory; one GPU exactly on the GPU overlay
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okR := c.Resources.Requests[r]
		lim, okL := c.Resources.Limits[r]
		if !okR || !okL || req.Cmp(lim) > 0 {
			t.Errorf("resources %s: request %v, limit %v: want both, request ≤ limit", r, req.String(), lim.String())
		}
	}
	const gpuRes = corev1.ResourceName("nvidia.com/gpu")
	gpuLim, hasGPU := c.Resources.Limits[gpuRes]
	if ov.gpu {
		if !hasGPU || gpuLim.Value() != 1 {
			t.Errorf("limits nvidia.com/gpu = %v, want 1", gpuLim.String())
		}
		if req, ok := c.Resources.Requests[gpuRes]; ok && req.Cmp(gpuLim) != 0 {
			t.Errorf("requests nvidia.com/gpu %v differs from the limit %v (extended resources must be equal)", req.String(), gpuLim.String())
		}
		if !slices.ContainsFunc(pod.Spec.Tolerations, func(tol corev1.Toleration) bool {
			return tol.Key == "nvidia.com/gpu" && tol.Operator == corev1.TolerationOpExists && tol.Effect == corev1.TaintEffectNoSchedule
		}) {
			t.Errorf("tolerations %+v: want nvidia.com/gpu Exists NoSchedule (GPU nodes are usually tainted)", pod.Spec.Tolerations)
		}
		if pod.Spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
			t.Errorf("nodeSelector %v: want nvidia.com/gpu.present=true", pod.Spec.NodeSelector)
		}
		if !strings.HasSuffix(c.Image, ":gpu") {
			t.Errorf("image %s, want the GPU image (tag gpu)", c.Image)
		}
	} else {
		if hasGPU {
			t.Error("the CPU overlay asks for a GPU")
		}
		if !strings.HasSuffix(c.Image, ":cpu") {
			t.Errorf("image %s, want the CPU image (tag cpu)", c.Image)
		}
	}

	// volumes: the ConfigMap as a folder (no subPath, so updates reach the pod), the repository
	// read-only from the claim, a writable /tmp
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("volumeMount %s: no volume %q", m.MountPath, m.Name)
		}
	}
	if len(c.Command) != 1 || c.Command[0] != "/opt/policyd/bin/policyd" {
		t.Errorf("command %q, want [/opt/policyd/bin/policyd]", c.Command)
	}
	opts := policydArgs(t, c.Args)
	cfgDir := filepath.ToSlash(filepath.Dir(opts.File))
	m, ok := mounts[cfgDir]
	switch {
	case opts.File == "":
		t.Error("policyd is not given --config: nothing to hot-reload")
	case !ok:
		t.Errorf("--config %s: nothing is mounted at %s", opts.File, cfgDir)
	case m.SubPath != "" || m.SubPathExpr != "":
		t.Errorf("the config is mounted with subPath %q: the kubelet never updates such a mount, so policyd would never reload", m.SubPath)
	case vols[m.Name].ConfigMap == nil || vols[m.Name].ConfigMap.Name != cm.Name:
		t.Errorf("%s is not the ConfigMap %s", cfgDir, cm.Name)
	}
	files := map[string]string{}
	for k, v := range cm.Data {
		files[cfgDir+"/"+k] = v
	}
	models, ok := mounts["/models"]
	if !ok || !models.ReadOnly {
		t.Errorf("the repository is not mounted read-only at /models: %+v", models)
	} else if v := vols[models.Name]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("volume %s is not the claim %s", models.Name, pvc.Name)
	}
	if tmp, ok := mounts["/tmp"]; !ok || vols[tmp.Name].EmptyDir == nil {
		t.Error("no emptyDir at /tmp: with a read-only root file system nothing could write a temporary file")
	}
	env := envOf(t, c)
	if tok := adminTokenFile(t, c.Args, env, files); tok != "" {
		checkSecretMount(t, tok, c, pod.Spec.Volumes)
		files[tok] = "test-token\n"
	}
	cfg := checkPolicydConfig(t, c.Args, env, files, "/models")
	if _, p, _ := net.SplitHostPort(cfg.Server.Addr); p != strconv.Itoa(port) || strings.HasPrefix(cfg.Server.Addr, "127.") {
		t.Errorf("policyd listens on %s; the probes and the Service use port %d on the pod's address", cfg.Server.Addr, port)
	}
	checkGRPCListen(t, ov.dir, cfg, grpcPort)
	if cfg.Engine.CPUThreads < 1 {
		t.Errorf("engine.cpu_threads = %d: in a container 0 (every core) sees the node's cores, not the CPU limit", cfg.Engine.CPUThreads)
	}
	if ov.gpu {
		if env["POLICYD_PROFILE"] != "gpu" {
			t.Errorf("POLICYD_PROFILE=%q, want gpu", env["POLICYD_PROFILE"])
		}
		if len(cfg.Engine.Backends) == 0 || cfg.Engine.Backends[0] == "cpu" {
			t.Errorf("engine.backends %v: the models without their own would run on the cpu backend", cfg.Engine.Backends)
		}
		for _, m := range cfg.Models {
			if len(m.Backends) > 0 && m.Backends[0] == "cpu" {
				t.Errorf("model %s: backends %v: put a GPU backend first", m.Name, m.Backends)
			}
		}
	}

	// shutdown: the grace period covers the preStop sleep and policyd's drain
	grace := time.Duration(30) * time.Second
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if preStop == 0 {
		t.Error("no preStop sleep: the pod may get SIGTERM while the Service still sends it requests")
	}
	if preStop+cfg.Server.ShutdownTimeout >= grace {
		t.Errorf("terminationGracePeriodSeconds %v ≤ preStop %v + server.shutdown_timeout %v: SIGKILL would cut the drain", grace, preStop, cfg.Server.ShutdownTimeout)
	}

	// the autoscaler: owns the Deployment's replicas, scales on the queue depth metric the
	// adapter serves
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != dep.Name || hpa.Spec.ScaleTargetRef.APIVersion != "apps/v1" {
		t.Errorf("the HPA scales %+v, not the Deployment %s", hpa.Spec.ScaleTargetRef, dep.Name)
	}
	if dep.Spec.Replicas != nil {
		t.Errorf("the Deployment sets replicas %d: every apply would fight the HPA", *dep.Spec.Replicas)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("HPA replicas %v..%d: want at least 2 (the PodDisruptionBudget lets one go)", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	served := adapterMetrics(t)
	if len(hpa.Spec.Metrics) != 1 {
		t.Fatalf("HPA metrics %+v: want the queue depth alone", hpa.Spec.Metrics)
	}
	hm := hpa.Spec.Metrics[0]
	if hm.Type != autoscalingv2.PodsMetricSourceType || hm.Pods == nil || hm.Pods.Metric.Name != "policyd_queue_depth" ||
		hm.Pods.Target.Type != autoscalingv2.AverageValueMetricType || hm.Pods.Target.AverageValue == nil || hm.Pods.Target.AverageValue.Sign() <= 0 {
		t.Errorf("HPA metric %+v: want the Pods metric policyd_queue_depth with a positive AverageValue target", hm)
	} else if !served[hm.Pods.Metric.Name] {
		t.Errorf("HPA metric %s: the Prometheus adapter rules serve %v", hm.Pods.Metric.Name, keys(served))
	}
}

// adminTokenSecret is the Secret (and its key) that holds the admin token, which
// docs/deployment.md and the comments of the manifests tell the operator to create.
const adminTokenSecret, adminTokenKey = "policyd-admin-token", "token"

// checkSecretMount: the admin token file is the key "token" of the Secret policyd-admin-token,
// mounted read-only as a folder — no subPath, which the kubelet never updates, so a rotated
// token reaches the pod — and not optional, so that no pod starts without it.
func checkSecretMount(t *testing.T, token string, c corev1.Container, volumes []corev1.Volume) {
	t.Helper()
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Dir(token) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Errorf("admin.token_file %s: nothing is mounted at %s", token, path.Dir(token))
		return
	}
	if mount.SubPath != "" || mount.SubPathExpr != "" {
		t.Errorf("the admin token is mounted with subPath %q: the kubelet never updates such a mount, so a rotated token would never reach policyd", mount.SubPath)
	}
	if !mount.ReadOnly {
		t.Errorf("volumeMount %s: want readOnly", mount.MountPath)
	}
	var sec *corev1.SecretVolumeSource
	for _, v := range volumes {
		if v.Name == mount.Name {
			sec = v.Secret
		}
	}
	switch {
	case sec == nil:
		t.Errorf("admin.token_file %s: volume %q is not a Secret", token, mount.Name)
		return
	case sec.SecretName != adminTokenSecret:
		t.Errorf("the admin token comes from the Secret %q; the docs tell the operator to create %q", sec.SecretName, adminTokenSecret)
	case sec.Optional != nil && *sec.Optional:
		t.Errorf("the Secret %s is optional: a pod would start without its token", sec.SecretName)
	}
	key := path.Base(token) // without items, each key is a file of that name
	for _, it := range sec.Items {
		if it.Path == path.Base(token) {
			key = it.Key
		}
	}
	if len(sec.Items) > 0 && !slices.ContainsFunc(sec.Items, func(it corev1.KeyToPath) bool { return it.Path == path.Base(token) }) {
		t.Errorf("admin.token_file %s: the Secret's items %+v put no file there", token, sec.Items)
	} else if key != adminTokenKey {
		t.Errorf("admin.token_file %s is the Secret's key %q; the docs create the key %q", token, key, adminTokenKey)
	}
	if m := sec.DefaultMode; m != nil && *m&0o044 == 0 {
		t.Errorf("Secret volume defaultMode %#o: neither the group (fsGroup) nor others may read the token; policyd runs as %d", *m, imageUID)
	}
}

// selectorOf is a label selector as the API server reads it; an empty one is an error here
// (it would select every pod of the namespace).
func selectorOf(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil || len(s.MatchLabels)+len(s.MatchExpressions) == 0 {
		return nil, errors.New("empty selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}

// TestKubectlRendersTheSame: where kubectl is installed, its kustomize (the one kubectl
// apply -k uses, an older release than the library here) renders every kustomization into
// the same objects.
func TestKubectlRendersTheSame(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: only kustomize's library renders here")
	}
	for _, dir := range []string{overlays[0].dir, overlays[1].dir, adapterDir, kserveDir} {
		out, err := exec.Command(kubectl, "kustomize", dir).Output()
		if err != nil {
			t.Errorf("kubectl kustomize %s: %v", dir, err)
			continue
		}
		want := map[string]any{}
		for _, y := range render(t, dir) {
			var obj map[string]any
			if err := yaml.Unmarshal(y, &obj); err != nil {
				t.Fatal(err)
			}
			want[objectKey(obj)] = obj
		}
		got := map[string]any{}
		for _, doc := range strings.Split(string(out), "\n---\n") {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("kubectl kustomize %s: %v", dir, err)
			}
			got[objectKey(obj)] = obj
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("kubectl kustomize %s renders objects %v, kustomize's library %v, or their content differs", dir, keys(got), keys(want))
		}
	}
}

func objectKey(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	return fmt.Sprintf("%v %v %v/%v", obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
}
