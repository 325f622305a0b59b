//! Placeholder until the JSON Schema converter lands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);
pub fn json_object_grammar() -> String {
    String::new()
}
pub fn grammar_for_schema(_schema: &serde_json::Value) -> Result<String, SchemaError> {
    Err(SchemaError("todo".into()))
}
