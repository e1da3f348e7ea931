use chrono::TimeZone;

use super::*;

fn date() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2019, 5, 3, 4, 33, 42).unwrap()
}

fn data() -> TemplateData {
    let mut run = RunVars::new(RunId::new("ca1"), date());
    run.registry = "myreg.azurecr.io".into();
    run.os = "linux".into();
    run.architecture = "amd64".into();
    run.commit = "abc123".into();
    run.branch = "main".into();
    run.task_name = "nightly".into();
    run.repository = "team/web".into();
    run.git_tag = "v1.0.0".into();
    run.triggered_by = "manual".into();
    run.os_version = "ubuntu-22.04".into();
    let values = Values::from_yaml(
        "tag: v1\nimage:\n  name: web\n  tag: '2.0'\nn: 3\nlist: [a, b]\nempty: ''\n\
         my-key: dash\nnothing: null\n",
        "values.yaml",
    )
    .unwrap();
    let secrets = BTreeMap::from([("pw".to_string(), "s3cret".to_string())]);
    TemplateData { run, values, secrets }
}

fn r(template: &str) -> String {
    match render(template, &data()) {
        Ok(rendered) => rendered.text,
        Err(e) => panic!("{template:?}: {e}"),
    }
}

fn missing(template: &str) -> Vec<(u32, u32, String)> {
    let rendered = render(template, &data()).unwrap();
    rendered.missing.into_iter().map(|m| (m.line, m.col, m.expr)).collect()
}

fn err(template: &str) -> RenderError {
    match render(template, &data()) {
        Ok(rendered) => panic!("{template:?} rendered {:?}", rendered.text),
        Err(e) => e,
    }
}

#[test]
fn every_run_variable() {
    let cases = [
        ("ID", "ca1"),
        ("SharedVolume", "kiln_vol_ca1"),
        ("Registry", "myreg.azurecr.io"),
        ("RegistryName", "myreg"),
        ("Date", "20190503-043342z"),
        ("OS", "linux"),
        ("Architecture", "amd64"),
        ("Commit", "abc123"),
        ("Branch", "main"),
        ("TaskName", "nightly"),
        ("Repository", "team/web"),
        ("GitTag", "v1.0.0"),
        ("TriggeredBy", "manual"),
        ("OSVersion", "ubuntu-22.04"),
    ];
    for (field, want) in cases {
        assert_eq!(r(&format!("{{{{.Run.{field}}}}}")), want, "{field}");
    }
    assert_eq!(r("{{.Build.ID}}"), "ca1");
}

#[test]
fn run_var_defaults_follow_the_host_in_go_names() {
    let run = RunVars::new(RunId::new("ca7"), date());
    assert_eq!(run.os, goos(std::env::consts::OS));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(run.architecture, "amd64");
    }
    assert_eq!(run.shared_volume, "kiln_vol_ca7");
    assert_eq!(run.registry_name(), "");
    assert_eq!(run.commit, "");
    assert_eq!(goarch("x86_64"), "amd64");
    assert_eq!(goarch("aarch64"), "arm64");
    assert_eq!(goarch("x86"), "386");
    assert_eq!(goarch("riscv64"), "riscv64");
    assert_eq!(goos("linux"), "linux");
    assert_eq!(goos("macos"), "darwin");
    assert_eq!(goos("windows"), "windows");
}

#[test]
fn registry_name_is_the_text_before_the_first_dot() {
    let mut run = RunVars::new(RunId::new("ca1"), date());
    run.registry = "localhost:5000".into();
    assert_eq!(run.registry_name(), "localhost:5000");
    run.registry = "a.b.c".into();
    assert_eq!(run.registry_name(), "a");
}

#[test]
fn values_and_secrets() {
    assert_eq!(
        r("{{.Values.tag}} {{.Values.image.name}}:{{.Values.image.tag}} {{.Values.n}}"),
        "v1 web:2.0 3"
    );
    assert_eq!(r(r#"{{ index .Values "my-key" }}"#), "dash");
    assert_eq!(r("{{ .Secrets.pw }}"), "s3cret");
    assert_eq!(r("[{{ .Values.nothing }}]"), "[]");
}

#[test]
fn run_json_is_go_json_shell_quoted() {
    let want = concat!(
        r#"'{"Architecture":"amd64","Branch":"main","Commit":"abc123","Date":"20190503-043342z","#,
        r#""GitTag":"v1.0.0","ID":"ca1","OS":"linux","OSVersion":"ubuntu-22.04","#,
        r#""Registry":"myreg.azurecr.io","RegistryName":"myreg","Repository":"team/web","#,
        r#""SharedVolume":"kiln_vol_ca1","TaskName":"nightly","TriggeredBy":"manual"}'"#,
    );
    assert_eq!(r("{{.RunJSON}}"), want);
}

#[test]
fn values_json_sorts_escapes_and_quotes() {
    let mut d = data();
    d.values = Values::from_yaml(
        "z: 1\na: \"it's <b> & c\"\nf: 1.5\nbig: 1.0e+21\nm: {y: [true, null]}\n",
        "v",
    )
    .unwrap();
    let out = render("{{.ValuesJSON}}", &d).unwrap().text;
    assert_eq!(
        out,
        r#"'{"a":"it'\''s \u003cb\u003e \u0026 c","big":1e+21,"f":1.5,"m":{"y":[true,null]},"z":1}'"#
    );
    d.values = Values::new();
    assert_eq!(render("{{.ValuesJSON}}", &d).unwrap().text, "{}");
}

#[test]
fn pipelines_and_variables() {
    assert_eq!(r(r#"{{ .Values.tag | upper | printf "%s-x" }}"#), "V1-x");
    assert_eq!(r("{{ $t := .Values.image.tag }}{{ $t }}/{{ $.Values.tag }}"), "2.0/v1");
    assert_eq!(r("{{- /* a comment */ -}}\n  {{- .Values.tag }}"), "v1");
}

#[test]
fn control_structures() {
    assert_eq!(r("{{ if eq .Values.n 3 }}three{{ else }}other{{ end }}"), "three");
    assert_eq!(r("{{ if .Values.empty }}set{{ else if .Values.tag }}tag{{ end }}"), "tag");
    assert_eq!(r("{{ range $i, $e := .Values.list }}{{ $i }}={{ $e }};{{ end }}"), "0=a;1=b;");
    assert_eq!(r("{{ range .Values.list }}{{ . }}{{ $.Values.tag }} {{ end }}"), "av1 bv1 ");
    assert_eq!(r("{{ range .Values.none }}x{{ else }}empty{{ end }}"), "empty");
    assert_eq!(r("{{ with .Values.image }}{{ .name }}:{{ .tag }}{{ end }}"), "web:2.0");
    assert_eq!(r("{{ with .Values.none }}x{{ else }}{{ .Values.tag }}{{ end }}"), "v1");
}

#[test]
fn comparisons_and_logic() {
    let cases = [
        ("{{ eq .Values.tag \"v1\" }}", "true"),
        ("{{ ne .Values.n 3 }}", "false"),
        ("{{ lt 1 2 }}", "true"),
        ("{{ le 2 2 }}", "true"),
        ("{{ gt .Values.n 5 }}", "false"),
        ("{{ ge .Values.n 3 }}", "true"),
        ("{{ and .Values.tag .Values.empty }}", ""),
        ("{{ or .Values.empty .Values.tag }}", "v1"),
        ("{{ not .Values.empty }}", "true"),
        ("{{ len .Values.list }}", "2"),
    ];
    for (template, want) in cases {
        assert_eq!(r(template), want, "{template}");
    }
}

#[test]
fn sprig_string_functions() {
    let cases = [
        (r#"{{ .Values.missing | default "dflt" }}"#, "dflt"),
        (r#"{{ .Values.empty | default "dflt" }}"#, "dflt"),
        (r#"{{ .Values.tag | default "dflt" }}"#, "v1"),
        (r#"{{ upper "abc" }}"#, "ABC"),
        (r#"{{ lower "ABC" }}"#, "abc"),
        (r#"{{ title "hello-world foo_bar" }}"#, "Hello-World Foo_bar"),
        (r#"{{ trim "  x  " }}"#, "x"),
        (r#"{{ trimPrefix "a" "aab" }}"#, "ab"),
        (r#"{{ trimSuffix ".git" "repo.git.git" }}"#, "repo.git"),
        (r#"{{ trimAll "$-" "$-x-$" }}"#, "x"),
        (r#"{{ trimall "/" "/a/b/" }}"#, "a/b"),
        (r#"{{ replace "." "-" "a.b.c" }}"#, "a-b-c"),
        (r#"{{ quote "a\"b" .Values.missing 1 }}"#, r#""a\"b" "1""#),
        (r#"{{ .Values.missing | quote }}"#, ""),
        (r#"{{ squote "a" "b" }}"#, "'a' 'b'"),
        (r#"{{ contains "ell" "hello" }}"#, "true"),
        (r#"{{ hasPrefix "he" "hello" }}"#, "true"),
        (r#"{{ hasSuffix "lo" "hello" }}"#, "true"),
        (r#"{{ hasSuffix "he" "hello" }}"#, "false"),
    ];
    for (template, want) in cases {
        assert_eq!(r(template), want, "{template}");
    }
}

#[test]
fn sprig_encoding_math_and_json() {
    let cases = [
        (r#"{{ b64enc "hi" }}"#, "aGk="),
        (r#"{{ .Values.missing | b64enc }}"#, ""),
        (r#"{{ b64dec "aGk=" }}"#, "hi"),
        ("{{ add 1 2 3 }}", "6"),
        ("{{ add .Values.n 1 }}", "4"),
        ("{{ sub 10 4 }}", "6"),
        ("{{ mul 2 3 }}", "6"),
        ("{{ div 7 2 }}", "3"),
        ("{{ .Values.image | toJson }}", r#"{"name":"web","tag":"2.0"}"#),
        ("{{ .Values.list | toJson }}", r#"["a","b"]"#),
    ];
    for (template, want) in cases {
        assert_eq!(r(template), want, "{template}");
    }
    assert!(err("{{ div 1 0 }}").message.contains("division by zero"));
}

#[test]
fn split_and_join() {
    let cases = [
        (r#"{{ $p := split "/" "team/web/api" }}{{ $p._0 }} {{ $p._2 }}"#, "team api"),
        (r#"{{ (split ":" "img:tag")._1 }}"#, "tag"),
        (r#"{{ splitList "," "a,b,c" | join "+" }}"#, "a+b+c"),
        (r#"{{ join "," .Values.list }}"#, "a,b"),
        (r#"{{ join "," (list 1 .Values.missing "x") }}"#, "1,x"),
        (r#"{{ join "," "single" }}"#, "single"),
        (r#"{{ splitList "" "ab" | toJson }}"#, r#"["a","b"]"#),
    ];
    for (template, want) in cases {
        assert_eq!(r(template), want, "{template}");
    }
}

#[test]
fn now_and_date() {
    assert_eq!(r(r#"{{ date "2006-01-02 15:04:05" 1556858022 }}"#), "2019-05-03 04:33:42");
    assert_eq!(
        r(r#"{{ "2019-05-03T04:33:42Z" | date "Jan 2, 2006 at 3:04pm (MST)" }}"#),
        "May 3, 2019 at 4:33am (UTC)"
    );
    let before = Utc::now().format("%Y-%m-%d").to_string();
    let rendered = r(r#"{{ now | date "2006-01-02" }}"#);
    let after = Utc::now().format("%Y-%m-%d").to_string();
    assert!(rendered == before || rendered == after, "{rendered}");
    let now = r("{{ now }}");
    assert!(now.ends_with(" +0000 UTC"), "{now}");
    assert!(go_time::parse(&now).is_some(), "{now}");
}

#[test]
fn env_functions_are_not_available() {
    assert_eq!(err(r#"{{ env "HOME" }}"#).message, "function env not defined");
    assert_eq!(err(r#"{{ expandenv "$HOME" }}"#).message, "function expandenv not defined");
}

#[test]
fn missing_values_render_empty_and_are_reported() {
    let out = render("steps:\n  - cmd: echo {{ .Values.missing }}!\n", &data()).unwrap();
    assert_eq!(out.text, "steps:\n  - cmd: echo !\n");
    assert_eq!(
        out.missing,
        vec![MissingValue { line: 2, col: 18, expr: ".Values.missing".into() }]
    );
    // Columns count characters, not bytes.
    assert_eq!(missing("é {{ .Valeus.tag }}"), vec![(1, 6, ".Valeus.tag".to_string())]);
    assert_eq!(missing("{{ .Values.nothing }}"), vec![(1, 4, ".Values.nothing".to_string())]);
    assert_eq!(
        missing("{{ .Values.image.nope }}{{ .Run.Nope }}{{ .Secrets.nope }}"),
        vec![
            (1, 4, ".Values.image.nope".to_string()),
            (1, 28, ".Run.Nope".to_string()),
            (1, 43, ".Secrets.nope".to_string()),
        ]
    );
    assert_eq!(
        missing("{{ index .Values\n  \"no-such\" }}"),
        vec![(1, 4, r#"index .Values "no-such""#.to_string())]
    );
}

#[test]
fn missing_values_in_blocks() {
    assert_eq!(
        missing("{{ range .Values.list }}{{ $.Values.nope }}{{ end }}"),
        vec![(1, 28, "$.Values.nope".to_string())]
    );
    assert_eq!(
        missing("{{ with .Values.image }}{{ .name }}{{ .nope }}{{ end }}"),
        vec![(1, 39, ".nope".to_string())]
    );
    assert_eq!(
        missing("{{ with .Values.none }}{{ .nope }}{{ else }}{{ .Values.nope }}{{ end }}"),
        vec![(1, 48, ".Values.nope".to_string())]
    );
    assert_eq!(
        missing("{{ $x := .Values.nope }}[{{ $x }}]"),
        vec![(1, 10, ".Values.nope".to_string())]
    );
    assert_eq!(
        missing(
            r#"{{ define "t" }}{{ .nope }}{{ end }}{{ template "t" .Values }}{{ .Values.nope }}"#
        ),
        vec![(1, 66, ".Values.nope".to_string())]
    );
}

#[test]
fn conditions_and_defaults_are_not_reported() {
    assert_eq!(
        missing(r#"{{ if .Values.nope }}x{{ end }}{{ .Values.nope | default "d" }}"#),
        vec![]
    );
    assert_eq!(r(r#"{{ .Values.nope | default "d" }}"#), "d");
    // A default that is itself missing still prints `<no value>`: both are named.
    assert_eq!(
        missing("{{ .Values.a | default .Values.b }}"),
        vec![(1, 4, ".Values.a".to_string()), (1, 24, ".Values.b".to_string())]
    );
    // Nothing printed `<no value>`, so nothing is reported.
    assert_eq!(missing("{{ .Values.nope | b64enc }}{{ .Values.nope | quote }}"), vec![]);
    // A literal `<no value>` is deleted too, as ACR does, and names nothing.
    let out = render("a<no value>b", &data()).unwrap();
    assert_eq!((out.text.as_str(), out.missing.len()), ("ab", 0));
}

#[test]
fn missing_value_where_a_string_is_needed_is_an_error() {
    let e = err("x\n  {{ .Values.nope | upper }}");
    // The position of the pipeline whose command failed.
    assert_eq!((e.line, e.col), (2, 6));
    assert!(e.message.starts_with("upper: argument 1 is a missing value"), "{}", e.message);
}

#[test]
fn parse_errors_have_positions() {
    let e = err("a: 1\nb: {{ if }}\n");
    assert_eq!((e.line, e.col, e.message.as_str()), (2, 10, "missing value for if"));
    let e = err("a: 1\n  é {{ nofunc 1 }}");
    assert_eq!((e.line, e.col, e.message.as_str()), (2, 8, "function nofunc not defined"));
    let e = err("{{ if .Values.tag }}x");
    assert_eq!((e.line, e.message.as_str()), (1, "unexpected EOF"));
    // gtmpl-ng points at the closing delimiter of a stray `end`.
    let e = err("{{ end }}");
    assert_eq!((e.line, e.col, e.message.as_str()), (1, 8, "unexpected {{end}}"));
}

#[test]
fn exec_errors_have_positions() {
    let e = err("ab\n {{ index .Values.n 3 }}");
    assert_eq!((e.line, e.col), (2, 5));
    let e = err("line1\né {{ .Values.tag.x }}");
    assert_eq!((e.line, e.col, e.message.as_str()), (2, 6, "only maps and objects have fields"));
    assert_eq!(e.to_string(), "2:6: only maps and objects have fields");
}

#[test]
fn unclosed_actions_are_errors_at_their_start() {
    let e = err("steps:\n  - cmd: {{ .Values.tag\n");
    assert_eq!((e.line, e.col, e.message.as_str()), (2, 10, "unclosed action"));
    // The parser runs on into the next lines and fails there; the `{{` is still the culprit.
    let e = err("steps:\n  - cmd: {{ .Values.tag\n  - cmd: x\n");
    assert_eq!((e.line, e.col), (2, 10));
    assert_eq!(
        e.message,
        r#"unclosed action (the parser stopped at 3:3: illegal number syntax: "-")"#
    );
    let e = err("a {{/* never closed");
    assert_eq!((e.line, e.col), (1, 3));
    // Large and pathological inputs still end with an error rather than hanging.
    assert!(render(&"{{".repeat(200_000), &data()).is_err());
    assert!(render(&format!("{{{{ \"{}", "x".repeat(1_000_000)), &data()).is_err());
}

#[test]
fn hostile_templates_hit_limits() {
    assert!(err("{{ range 100000 }}x{{ end }}").message.contains("iterations"));
    let e = err(r#"{{ range 1000 }}{{ repeat 100000 "x" }}{{ end }}"#);
    assert!(e.message.contains("bytes allowed"), "{}", e.message);
    let e = err(r#"{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}"#);
    assert!(e.message.contains("nesting"), "{}", e.message);
}

#[test]
fn empty_and_plain_templates() {
    assert_eq!(r(""), "");
    assert_eq!(r("no templates here\n"), "no templates here\n");
}

#[test]
fn a_whole_task_file() {
    let task = r#"version: v1.1.0
steps:
  - id: build
    build: -t {{.Run.Registry}}/{{.Values.image.name}}:{{.Run.ID}} --build-arg run={{.RunJSON}} .
  - push:
    - {{.Run.Registry}}/{{.Values.image.name}}:{{.Run.ID}}
  - cmd: {{.Run.Registry}}/{{.Values.image.name}}:{{.Run.ID}} {{ .Values.args | default "--help" }}
    when: ["build"]
{{- range $i, $e := .Values.list }}
  - id: step-{{ $e }}
    cmd: busybox echo {{ $i }}
{{- end }}
"#;
    let out = render(task, &data()).unwrap();
    assert!(
        out.text.contains("build: -t myreg.azurecr.io/web:ca1 --build-arg run='{\"Architecture\"")
    );
    assert!(out.text.contains("  - cmd: myreg.azurecr.io/web:ca1 --help\n"));
    assert!(out.text.ends_with("  - id: step-b\n    cmd: busybox echo 1\n"), "{}", out.text);
    assert!(out.missing.is_empty());
}

mod fast_path {
    use proptest::prelude::*;

    use super::*;

    const FRAGMENTS: &[&str] = &[
        "text ",
        "\n",
        "  \t",
        "é",
        "<no value>",
        "{{ .Values.tag }}",
        "{{.Run.ID}}",
        "{{- .Values.n -}}",
        "{{ $.Values.image.name }}",
        "{{ .Values.missing }}",
        "{{ .Values.missing.deeper }}",
        "{{ .Values.nothing }}",
        "{{ .Values.image }}",
        "{{ .Values.list }}",
        "{{ .Secrets.pw }}",
        "{{ .Run.Nope.deeper }}",
        "{{/* c */}}",
        "{{- /* c */ -}}",
        "{{- /* c */}}",
        "{{ if .Values.tag }}yes{{ else }}no{{ end }}",
        "{{- if .Values.none -}} x {{- else if .Values.n }} n {{ end -}}",
        "{{ range $i, $e := .Values.list }}[{{ $i }}{{ . }}]{{ end }}",
        "{{ with .Values.image }}{{ .name }}{{ $.Values.tag }}{{ end }}",
        "{{ .Values.tag | upper }}",
        "{{ .Values.none | default \"d\" -}}",
        "{{ \"}}\" }}",
        "{{ printf \"%d\" .Values.n }}",
        "{{ .Values.tag.x }}",
        "{{ nofunc }}",
        "{{ end }}",
        "{{ $v := 1 }}{{ $v }}",
        "{{ .Values.tag | default \"d\" | upper }}",
        "{{ quote .Values.missing \"x\" 3 }}",
        "{{ .Values.missing | upper }}",
        "{{ add 1 .Values.n -2 }}",
        "{{ -3 }}{{ 017 }}{{ 1.5 }}{{ true }}",
        "{{ nil }}",
        "{{ \"s\" | printf \"%s-%d\" 3 }}",
        "{{ b64enc .Values.missing }}",
        "{{ list 1 .Values.list .Values.image | toJson }}",
        "{{ split \"/\" \"a/b\" }}",
        "{{ date \"2006\" 0 }}",
        "{{ .Values.image.name | replace \"e\" \"\\n\" }}",
        "{{ `raw\\n` | len }}",
        "{{ .Values.list | len }}",
        "{{ and .Values.tag .Values.n }}",
    ];

    proptest! {
        /// Whenever the fast path answers, it answers what gtmpl-ng alone does.
        #[test]
        fn fast_path_matches_whole_file_rendering(
            picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..24)
        ) {
            let template: String = picks.iter().map(|&i| FRAGMENTS[i]).collect();
            let d = data();
            let root = d.context();
            let context = Context::from(root.clone());
            let whole = render_whole(&template, &context);
            if let Some(fast) = segment::split(&template, &FUNCS).and_then(|p| render_pieces(&p, &root, &context)) {
                prop_assert_eq!(Ok(fast), whole, "{:?}", template);
            }
        }
    }
}

mod robustness {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text renders or fails with a position inside the input; nothing panics.
        #[test]
        fn any_text_renders_or_fails_cleanly(
            template in r#"([{}\-./$"'` |()\n\t:=,_]|[a-zA-Z0-9]|é|\{\{|\}\}|\.Values|\.Run\.ID|if |end|else|range|with|default|/\*|\*/){0,40}"#
        ) {
            match render(&template, &data()) {
                Ok(rendered) => prop_assert!(!rendered.text.contains(NO_VALUE)),
                Err(e) => {
                    let lines = template.split('\n').count() as u32;
                    prop_assert!(e.line >= 1 && e.line <= lines.max(1), "{e} for {template:?}");
                    prop_assert!(e.col >= 1, "{e}");
                }
            }
        }
    }
}
