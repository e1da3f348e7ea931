//! `ports` (`docker run -p`) and `expose` (`--expose`) strings, turned into Engine API port
//! bindings and exposed-port keys.
//!
//! ACR hands these strings to the Docker CLI, so users write the CLI's syntax:
//! `[ip:][hostPort:]containerPort[/proto]` with optional `a-b` ranges and bracketed IPv6
//! addresses. The API wants `"<port>/<proto>"` keys instead, so the CLI's parsing
//! (`nat.ParsePortSpec`) is reproduced here.

use std::collections::BTreeSet;

use bollard::models::{PortBinding, PortMap};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port specification {spec:?}: {reason}")]
pub struct PortError {
    pub spec: String,
    pub reason: &'static str,
}

/// Published ports and the container ports they imply, ready for the create request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Ports {
    pub(crate) bindings: PortMap,
    /// `"80/tcp"` keys; publishing a port exposes it too, as with `docker run -p`.
    pub(crate) exposed: BTreeSet<String>,
}

impl Ports {
    pub(crate) fn parse(publish: &[String], expose: &[String]) -> Result<Ports, PortError> {
        let mut ports = Ports::default();
        for spec in publish {
            for (key, binding) in parse_publish(spec)? {
                ports.exposed.insert(key.clone());
                ports
                    .bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(binding);
            }
        }
        for spec in expose {
            ports.exposed.extend(parse_expose(spec)?);
        }
        Ok(ports)
    }
}

fn parse_publish(spec: &str) -> Result<Vec<(String, PortBinding)>, PortError> {
    let err = |reason| PortError { spec: spec.to_string(), reason };
    let (address, proto) = split_proto(spec).map_err(err)?;
    // The CLI splits on ':' from the right; whatever precedes host and container port is the
    // IP, which may itself contain ':' (IPv6, optionally in brackets).
    let parts: Vec<&str> = address.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [container] => ("".to_string(), "", *container),
        [host, container] => ("".to_string(), *host, *container),
        [ip @ .., host, container] => (ip.join(":"), *host, *container),
        [] => return Err(err("empty")),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']').to_string();
    let (c_start, c_end) = parse_range(container).map_err(err)?;
    let container_ports = c_end - c_start + 1;
    let host_ip = (!ip.is_empty()).then_some(ip);

    let host_ports: Vec<Option<String>> = if host.is_empty() {
        vec![None; container_ports]
    } else {
        let (h_start, h_end) = parse_range(host).map_err(err)?;
        let host_count = h_end - h_start + 1;
        if container_ports == 1 && host_count > 1 {
            // One container port on any free port of a host range: the engine picks.
            vec![Some(host.to_string())]
        } else if host_count == container_ports {
            (h_start..=h_end).map(|p| Some(p.to_string())).collect()
        } else {
            return Err(err("host and container port ranges differ in size"));
        }
    };

    Ok((c_start..=c_end)
        .zip(host_ports)
        .map(|(port, host_port)| {
            (format!("{port}/{proto}"), PortBinding { host_ip: host_ip.clone(), host_port })
        })
        .collect())
}

fn parse_expose(spec: &str) -> Result<Vec<String>, PortError> {
    let err = |reason| PortError { spec: spec.to_string(), reason };
    let (port, proto) = split_proto(spec).map_err(err)?;
    let (start, end) = parse_range(port).map_err(err)?;
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn split_proto(spec: &str) -> Result<(&str, &str), &'static str> {
    match spec.rsplit_once('/') {
        None => Ok((spec, "tcp")),
        Some((rest, proto @ ("tcp" | "udp" | "sctp"))) => Ok((rest, proto)),
        Some(_) => Err("protocol must be tcp, udp or sctp"),
    }
}

/// `80` or `8000-8010`, as an inclusive range of valid port numbers.
fn parse_range(text: &str) -> Result<(usize, usize), &'static str> {
    let number = |t: &str| match t.parse::<u16>() {
        Ok(n) if n > 0 => Ok(usize::from(n)),
        _ => Err("ports must be numbers from 1 to 65535"),
    };
    match text.split_once('-') {
        None => number(text).map(|n| (n, n)),
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b { Err("a port range must not run backwards") } else { Ok((a, b)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ip: Option<&str>, port: Option<&str>) -> PortBinding {
        PortBinding { host_ip: ip.map(str::to_string), host_port: port.map(str::to_string) }
    }

    fn publish(spec: &str) -> Vec<(String, PortBinding)> {
        parse_publish(spec).expect("valid spec")
    }

    #[test]
    fn cli_forms_are_understood() {
        assert_eq!(publish("80"), vec![("80/tcp".into(), binding(None, None))]);
        assert_eq!(publish("8080:80"), vec![("80/tcp".into(), binding(None, Some("8080")))]);
        assert_eq!(
            publish("127.0.0.1:8080:80/udp"),
            vec![("80/udp".into(), binding(Some("127.0.0.1"), Some("8080")))]
        );
        assert_eq!(
            publish("127.0.0.1::80"),
            vec![("80/tcp".into(), binding(Some("127.0.0.1"), None))]
        );
        assert_eq!(
            publish("[::1]:8080:80"),
            vec![("80/tcp".into(), binding(Some("::1"), Some("8080")))]
        );
    }

    #[test]
    fn ranges_pair_up_or_float() {
        assert_eq!(
            publish("8000-8001:80-81"),
            vec![
                ("80/tcp".into(), binding(None, Some("8000"))),
                ("81/tcp".into(), binding(None, Some("8001"))),
            ]
        );
        assert_eq!(
            publish("8000-8010:80"),
            vec![("80/tcp".into(), binding(None, Some("8000-8010")))]
        );
        assert!(parse_publish("8000:80-81").is_err());
    }

    #[test]
    fn bad_specs_are_rejected_with_the_spec() {
        for spec in ["", "x", "0", "70000", "80/icmp", "81-80", "a:b:c"] {
            let err = parse_publish(spec).expect_err(spec);
            assert_eq!(err.spec, spec);
        }
    }

    #[test]
    fn expose_accepts_ranges_and_protocols() {
        assert_eq!(parse_expose("80").expect("valid"), vec!["80/tcp"]);
        assert_eq!(parse_expose("53-54/udp").expect("valid"), vec!["53/udp", "54/udp"]);
        assert!(parse_expose("http").is_err());
    }

    #[test]
    fn publishing_exposes_and_merges_bindings() {
        let ports = Ports::parse(&["127.0.0.1:8080:80".into(), "8081:80".into()], &["9000".into()])
            .expect("valid");
        assert_eq!(ports.exposed.into_iter().collect::<Vec<_>>(), vec!["80/tcp", "9000/tcp"]);
        assert_eq!(
            ports.bindings["80/tcp"],
            Some(vec![binding(Some("127.0.0.1"), Some("8080")), binding(None, Some("8081"))])
        );
    }
}
