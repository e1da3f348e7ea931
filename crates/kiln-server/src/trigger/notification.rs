//! Registry push notifications (issue 6): which tags a CNCF distribution registry says were
//! just pushed, read from the event envelope it POSTs to `/registry/events`
//! (`application/vnd.docker.distribution.events.v1+json`, distribution's
//! `docs/notifications.md`). A pure function over the body, so the HTTP layer stays thin and
//! the rules are unit-tested with the documented payloads and one recorded from a real
//! registry.
//!
//! An envelope is `{"events": [...]}`; an event has an `action` (`push`, `pull`, `mount`,
//! `delete`), a `target` (`mediaType`, `digest`, `repository`, `url`, and `tag` when the
//! manifest was pushed or pulled by tag), and the `request` that caused it (`host` is the Host
//! header the client sent). Only a push of a manifest by tag can move a base image, so
//! everything else (blob pushes, pulls, mounts, deletes, pushes by digest) is skipped, as are
//! fields and event shapes this module does not know: a registry is told delivery failed only
//! when the body is not an envelope at all.

use serde::Deserialize;

use super::registry::MANIFEST_MEDIA_TYPES;
use kiln_plan::manifest_list::INDEX_MEDIA_TYPES;

/// The envelope's media type (the request's `Content-Type`).
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// A tag that now points at `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedTag {
    /// The registry as its client named it: `request.host` (`127.0.0.1:5000`,
    /// `myreg.example.com`), else the host of `target.url`.
    pub registry: String,
    pub repository: String,
    pub tag: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// The manifest is a manifest list / OCI index: what moved for a platform is its entry,
    /// which the notification does not say.
    pub is_list: bool,
}

/// Why a body is not a notification envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("not a registry notification envelope ({MEDIA_TYPE}): {message}")]
    Json {
        /// Where serde stopped (1-based line and column), also part of `message`.
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Event {
    action: String,
    target: Target,
    request: Request,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Target {
    media_type: String,
    digest: String,
    repository: String,
    url: String,
    tag: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Request {
    host: String,
}

/// The manifest pushes by tag in a notification body, in the envelope's order.
pub fn pushed_tags(body: &[u8]) -> Result<Vec<PushedTag>, NotificationError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| NotificationError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    Ok(envelope.events.into_iter().filter_map(pushed_tag).collect())
}

fn pushed_tag(event: Event) -> Option<PushedTag> {
    let Event { action, target, request } = event;
    let wanted = action == "push"
        && MANIFEST_MEDIA_TYPES.contains(&target.media_type.as_str())
        && !target.tag.is_empty()
        && !target.digest.is_empty()
        && !target.repository.is_empty();
    if !wanted {
        return None;
    }
    let registry = if request.host.is_empty() { url_host(&target.url)? } else { request.host };
    Some(PushedTag {
        registry,
        repository: target.repository,
        tag: target.tag,
        digest: target.digest,
        is_list: INDEX_MEDIA_TYPES.contains(&target.media_type.as_str()),
    })
}

/// `http://host:port/v2/…` → `host:port`.
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    // Drop any `user:password@` a URL might carry.
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// distribution's `docs/notifications.md` (2.x, the `events.v1+json` era), "An example of a
    /// full event", verbatim but for the HTTP request line and headers above it. Its manifest
    /// push is a schema-1 manifest pushed without a tag and the rest are layer pushes, so
    /// nothing in it can move a base image.
    const DOCUMENTED_ENVELOPE: &str = r#"{
   "events": [
      {
         "id": "asdf-asdf-asdf-asdf-0",
         "timestamp": "2006-01-02T15:04:05Z",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v1+json",
            "length": 1,
            "digest": "sha256:0123456789abcdef0",
            "repository": "library/test",
            "url": "http://example.com/v2/library/test/manifests/latest"
         },
         "request": {
            "id": "asdfasdf",
            "addr": "client.local",
            "host": "registrycluster.local",
            "method": "PUT",
            "useragent": "test/0.1"
         },
         "actor": {
            "name": "test-actor"
         },
         "source": {
            "addr": "hostname.local:port"
         }
      },
      {
         "id": "asdf-asdf-asdf-asdf-1",
         "timestamp": "2006-01-02T15:04:05Z",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.docker.container.image.rootfs.diff+x-gtar",
            "length": 2,
            "digest": "tarsum.v2+sha256:0123456789abcdef1",
            "repository": "library/test",
            "url": "http://example.com/v2/library/test/manifests/latest"
         },
         "request": {
            "id": "asdfasdf",
            "addr": "client.local",
            "host": "registrycluster.local",
            "method": "PUT",
            "useragent": "test/0.1"
         },
         "actor": {
            "name": "test-actor"
         },
         "source": {
            "addr": "hostname.local:port"
         }
      },
      {
         "id": "asdf-asdf-asdf-asdf-2",
         "timestamp": "2006-01-02T15:04:05Z",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.docker.container.image.rootfs.diff+x-gtar",
            "length": 3,
            "digest": "tarsum.v2+sha256:0123456789abcdef2",
            "repository": "library/test",
            "url": "http://example.com/v2/library/test/manifests/latest"
         },
         "request": {
            "id": "asdfasdf",
            "addr": "client.local",
            "host": "registrycluster.local",
            "method": "PUT",
            "useragent": "test/0.1"
         },
         "actor": {
            "name": "test-actor"
         },
         "source": {
            "addr": "hostname.local:port"
         }
      }
   ]
}"#;

    /// The same docs (current edition, `docs/content/about/notifications.md`): "an example of a
    /// JSON event, sent in response to the pull of a manifest", verbatim.
    const DOCUMENTED_PULL: &str = r#"{
  "events": [
    {
      "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
      "timestamp": "2016-03-09T14:44:26.402973972-08:00",
      "action": "pull",
      "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
        "size": 708,
        "length": 708,
        "repository": "hello-world",
        "url": "http://192.168.100.227:5000/v2/hello-world/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
        "tag": "latest"
      },
      "request": {
        "id": "6df24a34-0959-4923-81ca-14f09767db19",
        "addr": "192.168.64.11:42961",
        "host": "192.168.100.227:5000",
        "method": "GET",
        "useragent": "curl/7.38.0"
      },
      "actor": {},
      "source": {
        "addr": "xtal.local:5000",
        "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"
      }
    }
  ]
}"#;

    /// Recorded from Debian's `docker-registry` 2.8.2 (tests/registry_events.rs) as
    /// `docker push 127.0.0.1:41419/kiln-events/base:t7148-155687849` finished: the manifest
    /// push, alone in its envelope (the layer pushes, and the `pull` events of the client's
    /// `HEAD`s on them, came before, one envelope each). `request.host` is the Host header
    /// the client sent; `source.addr` is the registry machine's hostname, not a name clients
    /// use.
    const RECORDED_PUSH: &str = r#"{
   "events": [
      {
         "id": "afeb477f-1357-4942-af22-662f8fc1e5dd",
         "timestamp": "2026-11-23T21:31:22.806924213Z",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 528,
            "digest": "sha256:9b4338da4fd462d4780bbf9113e284686b29823239f1a646cd5084ebfbd47be1",
            "length": 528,
            "repository": "kiln-events/base",
            "url": "http://127.0.0.1:41419/v2/kiln-events/base/manifests/sha256:9b4338da4fd462d4780bbf9113e284686b29823239f1a646cd5084ebfbd47be1",
            "tag": "t7148-155687849"
         },
         "request": {
            "id": "9dd7c0c2-08d0-4156-a241-42b93a53acee",
            "addr": "127.0.0.1:36594",
            "host": "127.0.0.1:41419",
            "method": "PUT",
            "useragent": "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.18.44-fc-v782 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))"
         },
         "actor": {},
         "source": {
            "addr": "vm:41419",
            "instanceID": "a8b39229-a7ef-4ce0-a25d-4bcc27c13981"
         }
      }
   ]
}"#;

    /// A layer of another recorded `docker push` (same registry, next run): the blob push,
    /// then the `pull` the client's `HEAD` on that blob caused (each came in an envelope of its
    /// own; here together).
    const RECORDED_LAYER: &str = r#"{
   "events": [
      {
         "id": "1c0190b9-9c90-41a3-8f0a-42fb3e3755aa",
         "timestamp": "2026-11-23T21:31:31.129573411Z",
         "action": "push",
         "target": {
            "mediaType": "application/octet-stream",
            "size": 1069555,
            "digest": "sha256:7ce09fe162342051337a8bb100b7b398d5a365dc87f560c3305b9fab9672e167",
            "length": 1069555,
            "repository": "kiln-events/base",
            "url": "http://127.0.0.1:35525/v2/kiln-events/base/blobs/sha256:7ce09fe162342051337a8bb100b7b398d5a365dc87f560c3305b9fab9672e167"
         },
         "request": {
            "id": "c1fcd419-383b-4ad1-9365-3fbc64b85fc6",
            "addr": "127.0.0.1:55330",
            "host": "127.0.0.1:35525",
            "method": "PUT",
            "useragent": "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.18.44-fc-v782 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))"
         },
         "actor": {},
         "source": {
            "addr": "vm:35525",
            "instanceID": "d6b3a7c2-34bd-4971-b964-e2dbab95bc1e"
         }
      },
      {
         "id": "88a42b1a-b378-4255-96e0-79f6f89a0a4b",
         "timestamp": "2026-11-23T21:31:31.136330391Z",
         "action": "pull",
         "target": {
            "mediaType": "application/octet-stream",
            "size": 1069555,
            "digest": "sha256:7ce09fe162342051337a8bb100b7b398d5a365dc87f560c3305b9fab9672e167",
            "length": 1069555,
            "repository": "kiln-events/base",
            "url": "http://127.0.0.1:35525/v2/kiln-events/base/blobs/sha256:7ce09fe162342051337a8bb100b7b398d5a365dc87f560c3305b9fab9672e167"
         },
         "request": {
            "id": "ee8b2b46-cde8-487d-856b-47b34b9d3c24",
            "addr": "127.0.0.1:55336",
            "host": "127.0.0.1:35525",
            "method": "HEAD",
            "useragent": "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.18.44-fc-v782 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))"
         },
         "actor": {},
         "source": {
            "addr": "vm:35525",
            "instanceID": "d6b3a7c2-34bd-4971-b964-e2dbab95bc1e"
         }
      }
   ]
}"#;

    #[test]
    fn a_recorded_docker_push_yields_its_tag_and_its_layers_nothing() {
        assert_eq!(
            pushed_tags(RECORDED_PUSH.as_bytes()),
            Ok(vec![PushedTag {
                registry: "127.0.0.1:41419".into(),
                repository: "kiln-events/base".into(),
                tag: "t7148-155687849".into(),
                digest: "sha256:9b4338da4fd462d4780bbf9113e284686b29823239f1a646cd5084ebfbd47be1"
                    .into(),
                is_list: false,
            }])
        );
        assert_eq!(pushed_tags(RECORDED_LAYER.as_bytes()), Ok(vec![]));
    }

    const DIGEST: &str = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf";

    /// One event in an envelope: `action` on a `target` (JSON object members), with
    /// `request.host` if given.
    fn envelope(action: &str, target: &str, host: Option<&str>) -> String {
        let request = host.map(|h| format!(r#","request":{{"host":"{h}","method":"PUT"}}"#));
        format!(
            r#"{{"events":[{{"id":"e1","action":"{action}","target":{{{target}}}{}}}]}}"#,
            request.unwrap_or_default()
        )
    }

    fn manifest_target(media_type: &str, tag: Option<&str>) -> String {
        let tag = tag.map(|t| format!(r#","tag":"{t}""#)).unwrap_or_default();
        format!(
            r#""mediaType":"{media_type}","digest":"{DIGEST}","size":708,"repository":"team/base",
               "url":"http://10.0.0.5:5000/v2/team/base/manifests/{DIGEST}"{tag}"#
        )
    }

    fn pushed(registry: &str, tag: &str) -> PushedTag {
        PushedTag {
            registry: registry.into(),
            repository: "team/base".into(),
            tag: tag.into(),
            digest: DIGEST.into(),
            is_list: false,
        }
    }

    #[test]
    fn the_documented_envelope_parses_and_holds_no_tag_push() {
        assert_eq!(pushed_tags(DOCUMENTED_ENVELOPE.as_bytes()), Ok(vec![]));
    }

    #[test]
    fn a_documented_pull_is_ignored() {
        assert_eq!(pushed_tags(DOCUMENTED_PULL.as_bytes()), Ok(vec![]));
        // The same event as a push is one.
        let as_push = DOCUMENTED_PULL.replace(r#""action": "pull""#, r#""action": "push""#);
        assert_eq!(
            pushed_tags(as_push.as_bytes()),
            Ok(vec![PushedTag {
                registry: "192.168.100.227:5000".into(),
                repository: "hello-world".into(),
                tag: "latest".into(),
                digest: DIGEST.into(),
                is_list: false,
            }])
        );
    }

    #[test]
    fn manifest_pushes_by_tag_of_each_manifest_media_type_count() {
        for media_type in MANIFEST_MEDIA_TYPES {
            let body =
                envelope("push", &manifest_target(media_type, Some("1.0")), Some("reg:5000"));
            let is_list = INDEX_MEDIA_TYPES.contains(&media_type);
            let expected = PushedTag { is_list, ..pushed("reg:5000", "1.0") };
            assert_eq!(pushed_tags(body.as_bytes()), Ok(vec![expected]), "{media_type}");
        }
    }

    #[test]
    fn registry_is_the_request_host_else_the_target_url_host() {
        let target = manifest_target(MANIFEST_MEDIA_TYPES[0], Some("1.0"));
        let body = envelope("push", &target, None);
        assert_eq!(pushed_tags(body.as_bytes()), Ok(vec![pushed("10.0.0.5:5000", "1.0")]));
        let body = envelope("push", &target, Some(""));
        assert_eq!(pushed_tags(body.as_bytes()), Ok(vec![pushed("10.0.0.5:5000", "1.0")]));
        // Neither: nothing to match a base image against.
        let no_url = target.replace(r#""url":"#, r#""link":"#);
        assert_eq!(pushed_tags(envelope("push", &no_url, None).as_bytes()), Ok(vec![]));
        assert_eq!(
            url_host("https://user:pw@myreg.example.com:443/v2/a/manifests/x").as_deref(),
            Some("myreg.example.com:443")
        );
        assert_eq!(url_host("not a url"), None);
    }

    #[test]
    fn blob_pushes_pulls_tagless_pushes_mounts_and_deletes_are_ignored() {
        let blob = format!(
            r#""mediaType":"application/octet-stream","digest":"{DIGEST}","size":2,
               "repository":"team/base","url":"http://reg:5000/v2/team/base/blobs/{DIGEST}""#
        );
        let manifest = MANIFEST_MEDIA_TYPES[0];
        for (action, target) in [
            ("push", blob.clone()),
            // A blob event never has a tag, but even one with a tag is not a manifest.
            ("push", format!(r#"{blob},"tag":"1.0""#)),
            ("pull", manifest_target(manifest, Some("1.0"))),
            ("push", manifest_target(manifest, None)),
            ("push", manifest_target(manifest, Some(""))),
            (
                "push",
                manifest_target(
                    "application/vnd.docker.distribution.manifest.v1+json",
                    Some("1.0"),
                ),
            ),
            ("mount", blob.clone()),
            ("delete", format!(r#""digest":"{DIGEST}","repository":"team/base""#)),
            ("delete", r#""repository":"team/base","tag":"1.0""#.to_string()),
        ] {
            let body = envelope(action, &target, Some("reg:5000"));
            assert_eq!(pushed_tags(body.as_bytes()), Ok(vec![]), "{body}");
        }
    }

    #[test]
    fn every_tag_push_of_an_envelope_is_read_in_order() {
        let a = manifest_target(MANIFEST_MEDIA_TYPES[1], Some("a"));
        let b = manifest_target(MANIFEST_MEDIA_TYPES[3], Some("b"));
        let body = format!(
            r#"{{"events":[
                {{"action":"push","target":{{{a}}},"request":{{"host":"reg:5000"}}}},
                {{"action":"pull","target":{{{a}}},"request":{{"host":"reg:5000"}}}},
                {{"action":"push","target":{{{b}}},"request":{{"host":"reg:5000"}},
                  "actor":{{"name":"ci"}},"source":{{"addr":"x:5000"}},"extra":[1,2]}}
            ]}}"#
        );
        // Both are lists (a Docker manifest list, an OCI index).
        let list = |tag| PushedTag { is_list: true, ..pushed("reg:5000", tag) };
        assert_eq!(pushed_tags(body.as_bytes()), Ok(vec![list("a"), list("b")]));
        assert_eq!(pushed_tags(br#"{"events":[]}"#), Ok(vec![]));
    }

    #[test]
    fn a_body_that_is_not_an_envelope_is_an_error_with_its_position() {
        let error =
            pushed_tags(b"{\n  \"events\": [\n    {\"action\": \"push\",}\n  ]\n}").unwrap_err();
        let NotificationError::Json { line, column, ref message } = error;
        assert_eq!((line, column), (3, 23), "{message}");
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("not a registry notification envelope ({MEDIA_TYPE}): "))
        );
        assert!(shown.ends_with("at line 3 column 23"), "{shown}");
        for body in [&b""[..], b"[]", b"{}", br#"{"events":{}}"#, br#"{"events":[1]}"#] {
            let error = pushed_tags(body).unwrap_err();
            assert!(error.to_string().contains(" at line 1 column "), "{error}");
        }
    }
}
