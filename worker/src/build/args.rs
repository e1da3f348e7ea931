//! The `docker build` argument list of a build step, parsed the way the Docker CLI parses it.
//!
//! ACR passes the build string verbatim to a `docker` CLI container and only *guesses* at the
//! tokens it needs (tags, Dockerfile, build args, target, context) with a heuristic that breaks on
//! `--tag=x` and on a context right after a boolean flag (sharp edge 21). kiln talks to the
//! Engine API itself, so it must understand every flag it accepts: this parser knows which flags
//! take a value (pflag rules: `--flag value`, `--flag=value`, `-f value`, `-fvalue`, `-f=value`,
//! clustered short booleans `-q`, `--bool=false`), so the positional context is always found, and
//! it rejects what it does not know with an error naming the flag instead of silently dropping it.
//! The plan hands the arguments over already split shell-style, so quoting is not handled here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kiln_plan::image_ref::ImageRef;
use kiln_plan::plan::EnvVar;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown flag: {flag}")]
    UnknownFlag { flag: String },
    #[error("flag {flag} is not supported by kiln: {reason}")]
    UnsupportedFlag { flag: String, reason: &'static str },
    #[error("flag needs an argument: {flag}")]
    MissingValue { flag: String },
    #[error("invalid argument {value:?} for {flag}: {reason}")]
    InvalidValue { flag: String, value: String, reason: String },
    #[error("docker build requires exactly 1 argument (the build context, e.g. `.`); none given")]
    NoContext,
    #[error(
        "docker build requires exactly 1 argument (the build context); got {first:?} and {second:?}"
    )]
    ExtraContext { first: String, second: String },
    #[error("reading the build context from stdin (`-`) is not supported: there is no stdin")]
    StdinContext,
}

/// What a build step asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildArgs {
    /// `-t`, in order, validated as image references.
    pub tags: Vec<String>,
    /// `-f`, as written (relative to the step's working directory for local contexts).
    pub dockerfile: Option<String>,
    /// `--build-arg`, later values overriding earlier ones; bare `K` took its value from the step
    /// environment (and was dropped when the environment has no `K`, as the Docker CLI does).
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// `--label k=v` (bare `k` means an empty value).
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub platform: Option<String>,
    /// `--add-host host:ip`, validated.
    pub add_hosts: Vec<String>,
    pub cache_from: Vec<String>,
    /// `--rm` (default true): remove intermediate containers after a successful build.
    pub rm: bool,
    pub force_rm: bool,
    pub quiet: bool,
    /// The positional argument: a path, or a remote (git/tarball) URL.
    pub context: String,
    /// Flags that were accepted but have no effect here, with why (for the step log).
    pub ignored: Vec<String>,
}

/// What a flag is, by whether it takes a value — so a value flag can never be applied without
/// one.
#[derive(Clone, Copy)]
enum Kind {
    Bool(BoolFlag),
    Value(ValueFlag),
}

#[derive(Clone, Copy)]
enum BoolFlag {
    NoCache,
    Pull,
    Rm,
    ForceRm,
    Quiet,
    Ignored(&'static str),
    Unsupported(&'static str),
}

#[derive(Clone, Copy)]
enum ValueFlag {
    Tag,
    File,
    BuildArg,
    Target,
    Label,
    Network,
    Platform,
    AddHost,
    CacheFrom,
    /// Accepted, no effect; the reason is logged.
    Ignored(&'static str),
    /// A `docker build` flag kiln cannot honour: an error with the reason.
    Unsupported(&'static str),
}

const BUILDKIT_ONLY: &str = "it needs BuildKit, and kiln builds with the classic builder";
const LIMITS: &str = "build resource limits are not supported";

/// Every `docker build` flag of the classic builder's CLI, so that a known-but-unsupported flag
/// gets a reason and, above all, so the parser always knows whether the next token is a value.
const FLAGS: &[(&str, Option<char>, Kind)] = &[
    ("tag", Some('t'), Kind::Value(ValueFlag::Tag)),
    ("file", Some('f'), Kind::Value(ValueFlag::File)),
    ("build-arg", None, Kind::Value(ValueFlag::BuildArg)),
    ("target", None, Kind::Value(ValueFlag::Target)),
    ("no-cache", None, Kind::Bool(BoolFlag::NoCache)),
    ("pull", None, Kind::Bool(BoolFlag::Pull)),
    ("label", None, Kind::Value(ValueFlag::Label)),
    ("network", None, Kind::Value(ValueFlag::Network)),
    ("platform", None, Kind::Value(ValueFlag::Platform)),
    ("add-host", None, Kind::Value(ValueFlag::AddHost)),
    ("cache-from", None, Kind::Value(ValueFlag::CacheFrom)),
    ("rm", None, Kind::Bool(BoolFlag::Rm)),
    ("force-rm", None, Kind::Bool(BoolFlag::ForceRm)),
    ("quiet", Some('q'), Kind::Bool(BoolFlag::Quiet)),
    ("progress", None, Kind::Value(ValueFlag::Ignored("it only changes the docker CLI's display"))),
    (
        "disable-content-trust",
        None,
        Kind::Bool(BoolFlag::Ignored("kiln does not verify image signatures")),
    ),
    (
        "compress",
        None,
        Kind::Bool(BoolFlag::Ignored("the context is streamed to a local engine uncompressed")),
    ),
    ("secret", None, Kind::Value(ValueFlag::Unsupported(BUILDKIT_ONLY))),
    ("ssh", None, Kind::Value(ValueFlag::Unsupported(BUILDKIT_ONLY))),
    ("output", Some('o'), Kind::Value(ValueFlag::Unsupported(BUILDKIT_ONLY))),
    (
        "iidfile",
        None,
        Kind::Value(ValueFlag::Unsupported("the worker writes no files for a build")),
    ),
    ("squash", None, Kind::Bool(BoolFlag::Unsupported("it needs an experimental daemon"))),
    ("isolation", None, Kind::Value(ValueFlag::Unsupported("Windows isolation is not supported"))),
    (
        "security-opt",
        None,
        Kind::Value(ValueFlag::Unsupported("build security options are not supported")),
    ),
    ("cgroup-parent", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("cpu-period", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("cpu-quota", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("cpu-shares", Some('c'), Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("cpuset-cpus", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("cpuset-mems", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("memory", Some('m'), Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("memory-swap", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("shm-size", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
    ("ulimit", None, Kind::Value(ValueFlag::Unsupported(LIMITS))),
];

/// Parses a build step's arguments. `env` is the step environment, where a bare `--build-arg K`
/// takes its value from.
pub fn parse(args: &[String], env: &[EnvVar]) -> Result<BuildArgs, ArgsError> {
    let mut out = BuildArgs { rm: true, ..BuildArgs::default() };
    let mut positionals: Vec<&str> = Vec::new();
    let mut i = 0;
    let mut flags_done = false;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if flags_done || arg == "-" || !arg.starts_with('-') {
            positionals.push(arg);
            continue;
        }
        if arg == "--" {
            flags_done = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let shown = format!("--{name}");
            let Some(&(_, _, kind)) = FLAGS.iter().find(|(l, ..)| *l == name) else {
                return Err(ArgsError::UnknownFlag { flag: shown });
            };
            match (kind, inline) {
                (Kind::Value(flag), Some(v)) => {
                    apply_value(&mut out, flag, &shown, v.to_string(), env)?
                }
                (Kind::Value(flag), None) => {
                    let v = next_value(args, &mut i, &shown)?;
                    apply_value(&mut out, flag, &shown, v, env)?;
                }
                (Kind::Bool(flag), Some(v)) => {
                    apply_bool(&mut out, flag, &shown, parse_bool(&shown, v)?)?
                }
                (Kind::Bool(flag), None) => apply_bool(&mut out, flag, &shown, true)?,
            }
            continue;
        }
        // Short flags: `-q`, `-t x`, `-tx`, `-t=x`, and clusters like `-qt x`.
        let cluster = &arg[1..];
        for (at, c) in cluster.char_indices() {
            let shown = format!("-{c}");
            let Some(&(_, _, kind)) = FLAGS.iter().find(|(_, s, _)| *s == Some(c)) else {
                return Err(ArgsError::UnknownFlag { flag: shown });
            };
            match kind {
                Kind::Bool(flag) => apply_bool(&mut out, flag, &shown, true)?,
                Kind::Value(flag) => {
                    let rest = &cluster[at + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        next_value(args, &mut i, &shown)?
                    } else {
                        rest.strip_prefix('=').unwrap_or(rest).to_string()
                    };
                    apply_value(&mut out, flag, &shown, value, env)?;
                    break;
                }
            }
        }
    }
    match positionals.as_slice() {
        [] => Err(ArgsError::NoContext),
        ["-"] => Err(ArgsError::StdinContext),
        [context] => {
            out.context = (*context).to_string();
            Ok(out)
        }
        [first, second, ..] => Err(ArgsError::ExtraContext {
            first: (*first).to_string(),
            second: (*second).to_string(),
        }),
    }
}

fn next_value(args: &[String], i: &mut usize, flag: &str) -> Result<String, ArgsError> {
    // pflag takes the next token as the value whatever it looks like (`-t -x` tags `-x`, which
    // then fails validation with a clear message) — except that nothing at all is an error.
    let value = args.get(*i).ok_or_else(|| ArgsError::MissingValue { flag: flag.to_string() })?;
    *i += 1;
    Ok(value.clone())
}

/// Go's `strconv.ParseBool`, which pflag uses for `--flag=value`.
fn parse_bool(flag: &str, value: &str) -> Result<bool, ArgsError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ArgsError::InvalidValue {
            flag: flag.to_string(),
            value: value.to_string(),
            reason: "expected true or false".to_string(),
        }),
    }
}

fn apply_bool(out: &mut BuildArgs, flag: BoolFlag, shown: &str, on: bool) -> Result<(), ArgsError> {
    match flag {
        BoolFlag::NoCache => out.no_cache = on,
        BoolFlag::Pull => out.pull = on,
        BoolFlag::Rm => out.rm = on,
        BoolFlag::ForceRm => out.force_rm = on,
        BoolFlag::Quiet => out.quiet = on,
        BoolFlag::Ignored(reason) => out.ignored.push(format!("{shown} ignored: {reason}")),
        BoolFlag::Unsupported(reason) => {
            return Err(ArgsError::UnsupportedFlag { flag: shown.to_string(), reason });
        }
    }
    Ok(())
}

fn apply_value(
    out: &mut BuildArgs,
    flag: ValueFlag,
    shown: &str,
    v: String,
    env: &[EnvVar],
) -> Result<(), ArgsError> {
    let invalid = |value: &str, reason: &str| ArgsError::InvalidValue {
        flag: shown.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    match flag {
        ValueFlag::Unsupported(reason) => {
            return Err(ArgsError::UnsupportedFlag { flag: shown.to_string(), reason });
        }
        ValueFlag::Ignored(reason) => out.ignored.push(format!("{shown} ignored: {reason}")),
        ValueFlag::Tag => {
            let parsed = ImageRef::parse(&v).map_err(|e| invalid(&v, &e.to_string()))?;
            if parsed.digest.is_some() {
                return Err(invalid(&v, "a tag cannot contain a digest"));
            }
            out.tags.push(v);
        }
        ValueFlag::File => {
            if v == "-" {
                return Err(invalid(&v, "reading the Dockerfile from stdin is not supported"));
            }
            if v.is_empty() {
                return Err(invalid(&v, "empty path"));
            }
            out.dockerfile = Some(v);
        }
        ValueFlag::BuildArg => match v.split_once('=') {
            Some(("", _)) => return Err(invalid(&v, "empty name")),
            Some((key, value)) => {
                out.build_args.insert(key.to_string(), value.to_string());
            }
            None if v.is_empty() => return Err(invalid(&v, "empty name")),
            None => {
                // Docker's CLI fills a bare name from its own environment — here the step's —
                // and leaves the Dockerfile default in force when it is not set there.
                if let Some(var) = env.iter().rev().find(|e| e.name == v) {
                    out.build_args.insert(v, var.value.clone());
                }
            }
        },
        ValueFlag::Target => {
            if v.is_empty() {
                return Err(invalid(&v, "empty stage name"));
            }
            out.target = Some(v);
        }
        ValueFlag::Label => {
            let (key, value) = v.split_once('=').unwrap_or((&v, ""));
            if key.is_empty() {
                return Err(invalid(&v, "empty label name"));
            }
            out.labels.insert(key.to_string(), value.to_string());
        }
        ValueFlag::Network => {
            if v.is_empty() {
                return Err(invalid(&v, "empty network name"));
            }
            out.network = Some(v);
        }
        ValueFlag::Platform => {
            if v.is_empty() {
                return Err(invalid(&v, "empty platform"));
            }
            out.platform = Some(v);
        }
        ValueFlag::AddHost => {
            validate_extra_host(&v).map_err(|reason| invalid(&v, reason))?;
            out.add_hosts.push(v);
        }
        ValueFlag::CacheFrom => {
            ImageRef::parse(&v).map_err(|e| invalid(&v, &e.to_string()))?;
            out.cache_from.push(v);
        }
    }
    Ok(())
}

/// Docker's `ValidateExtraHost`: `name:ip` (split at the first `:`; IPv6 addresses keep theirs),
/// or `name:host-gateway`.
fn validate_extra_host(value: &str) -> Result<(), &'static str> {
    let Some((name, ip)) = value.split_once(':') else {
        return Err("expected host:ip");
    };
    if name.is_empty() {
        return Err("empty host name");
    }
    if ip == "host-gateway" || ip.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err("invalid IP address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn ok(s: &str) -> BuildArgs {
        parse(&args(s), &[]).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> ArgsError {
        match parse(&args(s), &[]) {
            Ok(parsed) => panic!("{s}: expected an error, got {parsed:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn tags_in_every_spelling() {
        let b = ok("-t a:1 --tag b:2 --tag=c:3 -td:4 -t=e:5 .");
        assert_eq!(b.tags, ["a:1", "b:2", "c:3", "d:4", "e:5"]);
        assert_eq!(b.context, ".");
        assert!(matches!(err("-t UPPER ."), ArgsError::InvalidValue { .. }));
        let digest = format!("-t a@sha256:{} .", "0".repeat(64));
        assert!(matches!(err(&digest), ArgsError::InvalidValue { .. }));
    }

    #[test]
    fn file_flag() {
        assert_eq!(ok("-f docker/Dockerfile .").dockerfile.as_deref(), Some("docker/Dockerfile"));
        assert_eq!(ok("--file=x.Dockerfile .").dockerfile.as_deref(), Some("x.Dockerfile"));
        assert_eq!(ok(". -fDf").dockerfile.as_deref(), Some("Df"));
        assert!(matches!(err("-f - ."), ArgsError::InvalidValue { .. }));
    }

    #[test]
    fn build_args_with_values_and_from_env() {
        let env = vec![
            EnvVar { name: "FROM_ENV".into(), value: "env value".into() },
            EnvVar { name: "EMPTY".into(), value: String::new() },
        ];
        let b = parse(
            &args("--build-arg A=1 --build-arg=B=x=y --build-arg FROM_ENV --build-arg EMPTY --build-arg MISSING --build-arg A=2 ."),
            &env,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.build_args.get("A").map(String::as_str), Some("2"));
        assert_eq!(b.build_args.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(b.build_args.get("FROM_ENV").map(String::as_str), Some("env value"));
        assert_eq!(b.build_args.get("EMPTY").map(String::as_str), Some(""));
        assert!(!b.build_args.contains_key("MISSING"));
        assert!(matches!(err("--build-arg =x ."), ArgsError::InvalidValue { .. }));
    }

    #[test]
    fn target_network_platform() {
        let b = ok("--target final --network host --platform linux/amd64 .");
        assert_eq!(b.target.as_deref(), Some("final"));
        assert_eq!(b.network.as_deref(), Some("host"));
        assert_eq!(b.platform.as_deref(), Some("linux/amd64"));
        let b = ok("--target=t --network=n --platform=p .");
        assert_eq!((b.target.as_deref(), b.network.as_deref()), (Some("t"), Some("n")));
    }

    #[test]
    fn boolean_flags() {
        let b = ok("--no-cache --pull --force-rm -q .");
        assert!(b.no_cache && b.pull && b.force_rm && b.quiet && b.rm);
        let b = ok("--rm=false --pull=true --no-cache=0 .");
        assert!(!b.rm && b.pull && !b.no_cache);
        assert!(ok("--rm .").rm);
        assert!(matches!(err("--pull=maybe ."), ArgsError::InvalidValue { .. }));
    }

    #[test]
    fn labels() {
        let b = ok("--label a=1 --label=b=2=3 --label bare .");
        assert_eq!(b.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(b.labels.get("b").map(String::as_str), Some("2=3"));
        assert_eq!(b.labels.get("bare").map(String::as_str), Some(""));
    }

    #[test]
    fn add_host_is_validated() {
        let b = ok("--add-host db:10.0.0.1 --add-host=v6:::1 --add-host gw:host-gateway .");
        assert_eq!(b.add_hosts, ["db:10.0.0.1", "v6:::1", "gw:host-gateway"]);
        for bad in ["--add-host db .", "--add-host db:notanip .", "--add-host :1.2.3.4 ."] {
            assert!(matches!(err(bad), ArgsError::InvalidValue { .. }), "{bad}");
        }
    }

    /// Sharp edge 21: ACR's heuristic misses a context that follows a boolean flag.
    #[test]
    fn context_after_boolean_flag_is_found() {
        assert_eq!(ok("--pull https://github.com/o/r.git").context, "https://github.com/o/r.git");
        assert_eq!(ok("--no-cache ctx -t a").context, "ctx");
        assert_eq!(ok("-q sub/dir").context, "sub/dir");
        // …and the context can come anywhere, flags after it included.
        let b = ok("ctx --no-cache -t a:1");
        assert_eq!((b.context.as_str(), b.tags.len()), ("ctx", 1));
        // `--` ends the flags.
        assert_eq!(ok("-t a -- -weird-dir").context, "-weird-dir");
    }

    #[test]
    fn short_flag_clusters() {
        let b = ok("-qt a:1 .");
        assert!(b.quiet);
        assert_eq!(b.tags, ["a:1"]);
        assert!(matches!(err("-qz ."), ArgsError::UnknownFlag { flag } if flag == "-z"));
    }

    #[test]
    fn unknown_and_unsupported_flags_are_named() {
        assert!(
            matches!(err("--frobnicate ."), ArgsError::UnknownFlag { flag } if flag == "--frobnicate")
        );
        assert!(matches!(err("-x ."), ArgsError::UnknownFlag { flag } if flag == "-x"));
        assert!(
            matches!(err("--secret id=a ."), ArgsError::UnsupportedFlag { flag, .. } if flag == "--secret")
        );
        assert!(matches!(err("-m 1g ."), ArgsError::UnsupportedFlag { flag, .. } if flag == "-m"));
        let message = err("--frobnicate .").to_string();
        assert!(message.contains("--frobnicate"), "{message}");
    }

    #[test]
    fn ignored_flags_are_reported() {
        let b = ok("--progress plain --disable-content-trust .");
        assert_eq!(b.context, ".");
        assert_eq!(b.ignored.len(), 2);
        assert!(b.ignored[0].starts_with("--progress"));
    }

    #[test]
    fn context_count() {
        assert_eq!(err("-t a:1"), ArgsError::NoContext);
        assert!(matches!(err("a b"), ArgsError::ExtraContext { .. }));
        assert_eq!(err("-"), ArgsError::StdinContext);
        assert!(matches!(err("-t"), ArgsError::MissingValue { flag } if flag == "-t"));
        assert!(matches!(err(". --tag"), ArgsError::MissingValue { flag } if flag == "--tag"));
        assert!(matches!(err(". --file"), ArgsError::MissingValue { .. }));
    }

    #[test]
    fn cache_from() {
        assert_eq!(ok("--cache-from a:1 --cache-from=b .").cache_from, ["a:1", "b"]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["-", "--", "---", "--=", "-=", "-t=", "--tag=", "-ß", "--ü=1", "-qq .", "-\u{0}"]
        {
            let _ = parse(&args(s), &[]);
        }
        let _ = parse(&[String::new()], &[]);
        let _ = parse(&["-t".into(), String::new(), ".".into()], &[]);
    }
}
