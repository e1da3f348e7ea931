//! `kiln build`: a quick build (and push) on the server, like `az acr build` (§5.4, §7.1).
//! A local context is packed and uploaded; a git or tarball URL is fetched by the server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use kiln_api::{Argument, DockerBuildRequest, Platform, RunRequest};
use kiln_plan::image_ref::ImageRef;

use super::remote::{self, ServerOptions, SourceArg, WaitArgs};
use crate::pack::resolve_dockerfile;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image to build and push, `repo[:tag]`; may use templates like `{{.Run.ID}}` (repeatable).
    #[arg(short = 't', long = "image", value_name = "IMG")]
    images: Vec<String>,
    /// The Dockerfile, relative to SOURCE for a local directory (may lie outside it).
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE", default_value = "Dockerfile")]
    file: String,
    /// A build argument; `K` alone takes K's value from the environment when set (repeatable).
    #[arg(long = "build-arg", value_name = "K[=V]")]
    build_args: Vec<String>,
    /// A build argument masked in the run's log (repeatable).
    #[arg(long = "secret-build-arg", value_name = "K[=V]")]
    secret_build_args: Vec<String>,
    /// The build stage to stop at.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// The platform to build for, `os/arch[/variant]`; several, comma-separated
    /// (`linux/amd64,linux/arm64`), build each and push every tag as one manifest list.
    #[arg(long, value_name = "PLATFORM[,PLATFORM...]", value_parser = Platform::from_flag, value_delimiter = ',')]
    platform: Vec<Platform>,
    /// The agent pool to run in (default: any agent).
    #[arg(long, value_name = "POOL")]
    agent_pool: Option<String>,
    /// Build without pushing.
    #[arg(long)]
    no_push: bool,
    #[command(flatten)]
    wait: WaitArgs,
    /// Limit on the run, in seconds (300 to 28800).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The context: a local directory, a git URL (`https://host/repo.git#ref:dir`), a
    /// tarball URL, or `/dev/null` for none.
    #[arg(value_name = "SOURCE")]
    source: String,
}

pub fn build(args: BuildArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let client = remote::connect(server)?;
    let source = SourceArg::classify(&args.source)?;
    // Everything this machine can judge is judged before anything is packed or sent.
    for image in &args.images {
        check_image(image)?;
    }
    let local_dockerfile = match &source {
        SourceArg::Local(dir) => Some(local_dockerfile(dir, &args.file)?),
        _ => None,
    };
    let mut build_args: Vec<Argument> = Vec::new();
    let env = |name: &str| std::env::var(name).ok();
    build_args.extend(args.build_args.iter().map(|a| build_arg(a, false, env)));
    build_args.extend(args.secret_build_args.iter().map(|a| build_arg(a, true, env)));
    if args.images.is_empty() && !args.no_push {
        eprintln!("Warning: no image name given with -t: the image is built but not pushed.");
    }
    let (source, dockerfile) = match (&source, local_dockerfile) {
        (SourceArg::Local(dir), Some(dockerfile)) => {
            let (source, in_archive) =
                remote::upload_context(&client, dir, Some(&dockerfile), "build_archive_")?;
            (source, in_archive.unwrap_or(args.file.clone()))
        }
        (other, _) => match remote::remote_source(other) {
            Some(source) => (source, args.file.clone()),
            None => anyhow::bail!("cannot use {} as a build context", args.source),
        },
    };
    let request = RunRequest::DockerBuild(DockerBuildRequest {
        source,
        images: args.images,
        dockerfile,
        build_args,
        target: args.target,
        platform: args.platform.first().cloned(),
        platforms: if args.platform.len() > 1 { args.platform } else { Vec::new() },
        is_push_enabled: !args.no_push,
        timeout_secs: args.timeout,
        agent_pool_name: args.agent_pool,
    });
    // Diagnostics of the synthesised task name it as the server does.
    remote::submit(&client, &request, "quick build", args.wait)
}

/// A `-t` as Docker will judge it once rendered: each template stands for one valid
/// character, so what the user wrote literally (`Bad:Tag`) is refused here, before an upload.
fn check_image(image: &str) -> anyhow::Result<()> {
    let mut literal = String::with_capacity(image.len());
    let mut rest = image;
    while let Some(start) = rest.find("{{") {
        literal.push_str(&rest[..start]);
        literal.push('x');
        rest = rest[start..].find("}}").map_or("", |end| &rest[start + end + 2..]);
    }
    literal.push_str(rest);
    ImageRef::parse(&literal).map_err(|e| anyhow::anyhow!("-t {image}: {e}"))?;
    Ok(())
}

/// The Dockerfile of a local context, which must be there.
fn local_dockerfile(dir: &Path, file: &str) -> anyhow::Result<PathBuf> {
    remote::check_local_context(dir)?;
    let dockerfile = resolve_dockerfile(dir, Path::new(file));
    if !dockerfile.is_file() {
        anyhow::bail!(
            "cannot find the Dockerfile {file}: there is no file {}",
            dockerfile.display()
        );
    }
    Ok(dockerfile)
}

/// `K=V`, or `K` alone: K's value from the environment when set (newer az), else no value,
/// so Docker reads it from the build's own environment.
pub(super) fn build_arg(arg: &str, secret: bool, env: impl Fn(&str) -> Option<String>) -> Argument {
    match arg.split_once('=') {
        Some((name, value)) => {
            Argument { name: name.to_string(), value: Some(value.to_string()), secret }
        }
        None => Argument { name: arg.to_string(), value: env(arg), secret },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_with_their_templates_standing_for_a_name() {
        assert!(check_image("app:{{.Run.ID}}").is_ok());
        assert!(check_image("{{.Run.Registry}}/app:v1-{{.Run.ID}}").is_ok());
        assert!(check_image("127.0.0.1:5000/app").is_ok());
        let err = check_image("Bad:Tag").unwrap_err().to_string();
        assert!(err.starts_with("-t Bad:Tag: ") && err.contains("lowercase"), "{err}");
        assert!(check_image("app:bad tag").is_err());
    }

    #[test]
    fn a_missing_dockerfile_names_the_path_tried() {
        let dir = tempfile::tempdir().unwrap();
        let err = local_dockerfile(dir.path(), "Dockerfile.dev").unwrap_err().to_string();
        let tried = dir.path().join("Dockerfile.dev");
        assert!(err.contains(&tried.display().to_string()), "{err}");
        std::fs::write(&tried, "FROM scratch\n").unwrap();
        assert_eq!(local_dockerfile(dir.path(), "Dockerfile.dev").unwrap(), tried);
        let err = local_dockerfile(&dir.path().join("nope"), "Dockerfile").unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn build_args_take_missing_values_from_the_environment() {
        let env = |name: &str| (name == "HOME_DIR").then(|| "/home/u".to_string());
        let arg = |name: &str, value: Option<&str>, secret| Argument {
            name: name.to_string(),
            value: value.map(str::to_string),
            secret,
        };
        assert_eq!(build_arg("A=1=2", false, env), arg("A", Some("1=2"), false));
        assert_eq!(build_arg("EMPTY=", true, env), arg("EMPTY", Some(""), true));
        assert_eq!(build_arg("HOME_DIR", false, env), arg("HOME_DIR", Some("/home/u"), false));
        assert_eq!(build_arg("UNSET", false, env), arg("UNSET", None, false));
    }
}
