//! The image tags a run set through its Docker API, and what they pointed at before.
//!
//! Images cannot carry the run label without changing what a user builds and pushes (kiln's
//! own build steps add none either), so the run remembers instead: each tag it builds, tags,
//! imports or commits, with the image the tag named before the run touched it. The run's end
//! puts each tag back: removed if it was new, pointed at its old image otherwise, so a step's
//! `docker build -t busybox .` cannot leave the engine's `busybox` changed for later runs.

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use kiln_plan::image_ref::ImageRef;

use crate::image::engine_message;

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Tag (with its default `:latest`) → the image ID it named before, in first-touch order.
    tags: Vec<(String, Option<String>)>,
}

impl Ledger {
    pub(crate) fn knows(&self, tag: &str) -> bool {
        self.tags.iter().any(|(t, _)| t == tag)
    }

    /// Records `tag` with its image before the run changes it; later changes keep the first.
    pub(crate) fn record(&mut self, tag: String, before: Option<String>) {
        if !self.knows(&tag) {
            self.tags.push((tag, before));
        }
    }

    /// Puts every tag back; returns what could not be.
    pub(crate) async fn restore(self, docker: &Docker) -> Vec<String> {
        let mut errors = Vec::new();
        for (tag, before) in self.tags.into_iter().rev() {
            let result = match &before {
                Some(id) => retag(docker, id, &tag).await,
                None => untag(docker, &tag).await,
            };
            if let Err(message) = result {
                errors.push(format!("image {tag}: {message}"));
            }
        }
        errors
    }
}

async fn retag(docker: &Docker, id: &str, tag: &str) -> Result<(), String> {
    let parsed = ImageRef::parse(tag).map_err(|e| e.to_string())?;
    crate::image::tag(docker, id, &parsed).await
}

async fn untag(docker: &Docker, tag: &str) -> Result<(), String> {
    match docker.remove_image(tag, None::<RemoveImageOptions>, None).await {
        Ok(_) => Ok(()),
        // Never created (a failed build), or a step removed it itself.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(engine_message(e)),
    }
}
