//! Programs served as models. A served program is a task's program as written, a stored
//! artifact fixed by hash, or a promoted name followed on every request — so a promotion or a
//! rollback takes effect without a restart, and every answer names the artifact that gave it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::openai::ApiError;
use crate::artifact::Artifact;
use crate::generator::Generator;
use crate::program::{Prediction, Program, ProgramError, Values};
use crate::store::Store;
use crate::task::Task;

/// A program to serve: a task file and, optionally, an artifact of it (a hash, a hash prefix or
/// a promoted name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSpec {
    pub task: PathBuf,
    pub artifact: Option<String>,
}

impl std::str::FromStr for ProgramSpec {
    type Err = String;

    /// `TASK.toml` or `TASK.toml=ARTIFACT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (task, artifact) = match s.rsplit_once('=') {
            Some((task, artifact)) if !artifact.is_empty() => (task, Some(artifact.to_string())),
            _ => (s, None),
        };
        if task.is_empty() {
            return Err(
                "give a task file, optionally `=ARTIFACT` (a hash or a promoted name)".into(),
            );
        }
        Ok(ProgramSpec {
            task: PathBuf::from(task),
            artifact,
        })
    }
}

/// Where a served program's artifact comes from.
enum Source {
    /// One artifact for the server's lifetime (the task's own program, or a hash).
    Fixed { hash: String, program: Arc<Program> },
    /// Whatever the promoted name points at when a request arrives.
    Promoted(String),
}

/// A program the server answers for.
pub struct ServedProgram {
    /// `program:NAME`, where NAME is the promoted name or else the task's name.
    pub id: String,
    /// The promoted name, which clients may also use as the model.
    pub alias: Option<String>,
    pub task: Task,
    /// The pinned model's (name, sha256) that artifacts must have been made for.
    pin: (String, String),
    source: Source,
    pub(super) generator: Generator,
    /// What the program's `retrieve` steps search.
    retriever: Arc<dyn crate::corpus::Retriever>,
    /// Promoted artifacts already checked, by hash.
    checked: Mutex<HashMap<String, Arc<Program>>>,
}

impl ServedProgram {
    /// `artifact` is resolved here once: a promoted name is followed, anything else fixed.
    pub(super) fn new(
        task: Task,
        spec_artifact: Option<&str>,
        own: &Artifact,
        pin: (String, String),
        store: &Store,
        (generator, retriever): (Generator, Arc<dyn crate::corpus::Retriever>),
    ) -> Result<ServedProgram, crate::workspace::WorkspaceError> {
        let name = task.task.name.clone();
        let (id, alias, source) = match spec_artifact {
            None => (
                format!("program:{name}"),
                None,
                Source::Fixed {
                    hash: own.content_hash(),
                    program: Arc::new(task.program.clone()),
                },
            ),
            Some(reference) if store.promoted(reference)?.is_some() => (
                format!("program:{reference}"),
                Some(reference.to_string()),
                Source::Promoted(reference.to_string()),
            ),
            Some(reference) => {
                let stored = store.artifact(reference)?;
                stored.artifact.check_runs_on(
                    &stored.hash,
                    &name,
                    (&pin.0, &pin.1),
                    &task.example_inputs(),
                )?;
                (
                    format!("program:{name}@{}", crate::artifact::short(&stored.hash)),
                    None,
                    Source::Fixed {
                        hash: stored.hash,
                        program: Arc::new(stored.artifact.program),
                    },
                )
            }
        };
        Ok(ServedProgram {
            id,
            alias,
            task,
            pin,
            source,
            generator,
            retriever,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a request's `model` names this program.
    pub fn answers_to(&self, model: &str) -> bool {
        model == self.id || self.alias.as_deref() == Some(model)
    }

    /// The artifact that answers now, with its hash.
    pub fn current(&self, store: &Store) -> Result<(String, Arc<Program>), ApiError> {
        let name = match &self.source {
            Source::Fixed { hash, program } => return Ok((hash.clone(), Arc::clone(program))),
            Source::Promoted(name) => name,
        };
        let hash = store
            .promoted(name)
            .map_err(|e| ApiError::server(e.to_string()))?
            .ok_or_else(|| {
                ApiError::server(format!("`{name}` no longer points at an artifact"))
                    .status(503, "server_error")
            })?;
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(program) = checked.get(&hash) {
            return Ok((hash, Arc::clone(program)));
        }
        let stored = store
            .artifact(&hash)
            .map_err(|e| ApiError::server(e.to_string()))?;
        stored
            .artifact
            .check_runs_on(
                &hash,
                &self.task.task.name,
                (&self.pin.0, &self.pin.1),
                &self.task.example_inputs(),
            )
            .map_err(|e| {
                ApiError::server(format!(
                    "`{name}` now points at an artifact this server cannot run: {e}"
                ))
                .status(503, "server_error")
            })?;
        let program = Arc::new(stored.artifact.program);
        checked.insert(hash.clone(), Arc::clone(&program));
        Ok((hash, program))
    }

    /// The program's inputs from a JSON object, every field it reads present.
    pub fn inputs_from_object(&self, object: &serde_json::Value) -> Result<Values, ApiError> {
        let fields = self.task.example_inputs();
        let serde_json::Value::Object(map) = object else {
            return Err(ApiError::invalid(format!(
                "`{}` reads a JSON object with the fields {}",
                self.id,
                fields.join(", ")
            )));
        };
        fields
            .iter()
            .map(|field| {
                let value = map.get(field).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "the input lacks the field `{field}` that `{}` reads (it reads {})",
                        self.id,
                        fields.join(", ")
                    ))
                    .code("missing_field")
                })?;
                Ok((field.clone(), value.clone()))
            })
            .collect()
    }

    /// The program's inputs from a chat message: a JSON object with its input fields, or plain
    /// text when it reads one field.
    pub fn inputs_from_message(&self, text: &str) -> Result<Values, ApiError> {
        let fields = self.task.example_inputs();
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value @ serde_json::Value::Object(_)) => self.inputs_from_object(&value),
            _ if fields.len() == 1 => Ok(Values::from([(
                fields[0].clone(),
                serde_json::Value::String(text.to_string()),
            )])),
            _ => Err(ApiError::invalid(format!(
                "`{}` reads several fields ({}): the last user message must be a JSON object \
                 with them",
                self.id,
                fields.join(", ")
            ))
            .param("messages")),
        }
    }

    /// Runs `program` on `inputs` with the task's generation settings.
    pub async fn predict(
        &self,
        program: &Program,
        inputs: &Values,
    ) -> Result<Prediction, ProgramError> {
        program
            .forward(
                &self.generator,
                self.retriever.as_ref(),
                inputs,
                &self.task.generation,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_task_and_optionally_an_artifact() {
        let spec: ProgramSpec = "tasks/sentiment.toml=prod".parse().unwrap();
        assert_eq!(spec.task, PathBuf::from("tasks/sentiment.toml"));
        assert_eq!(spec.artifact.as_deref(), Some("prod"));
        let spec: ProgramSpec = "task.toml".parse().unwrap();
        assert_eq!(spec.artifact, None);
        assert!("=prod".parse::<ProgramSpec>().is_err());
    }
}
