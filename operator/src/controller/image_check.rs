//! Stage 3 for a Collector's configuration: its image's own `validate`, run as a Job (the only
//! way to know which components an image has). The verdict is kept in the Collector's status;
//! the Job is deleted once read.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};

use super::*;

/// The image's verdict on `config`: the cached one when it is about this configuration and
/// image; else from a finished Job, which is then deleted; else `None` after starting (or while
/// waiting for) the Job.
pub(super) async fn image_verdict(
    ctx: &Context,
    owner: &gateway::Owner<'_>,
    image: &str,
    config: &crate::collector::ValidConfig,
    previous: Option<&validation::Validation>,
) -> Result<Option<validation::Validation>, Error> {
    let yaml = config.to_yaml();
    let key = validation::key(&yaml, image);
    if let Some(v) = validation::cached(previous, &key) {
        return Ok(Some(v.clone()));
    }
    let name = validation::job_name(owner.name, &key);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), owner.namespace);
    let Some(job) = ctx
        .stores
        .validation_jobs
        .get(&ObjectRef::new(&name).within(owner.namespace))
    else {
        let body = validation::job(owner, image, &yaml, &key);
        jobs.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        ctx.metrics.write("validation");
        info!(collector = owner.name, namespace = owner.namespace, job = %name, "validating the configuration with the collector image");
        return Ok(None);
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), owner.namespace);
    let pod = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await?
        .items
        .into_iter()
        .next();
    match validation::outcome(&key, &job, pod.as_ref()) {
        validation::Outcome::Pending => Ok(None),
        validation::Outcome::Done(v) => {
            let background = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            match jobs.delete(&name, &background).await {
                Ok(_) => ctx.metrics.write("validation"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            info!(collector = owner.name, namespace = owner.namespace, result = %v.result, "the collector image judged the configuration");
            Ok(Some(v))
        }
    }
}
