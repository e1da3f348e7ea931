pub mod diagnostic;
pub mod render;
pub mod run_id;
pub mod source_map;
pub mod task {
    pub mod yaml;
}
pub mod values;
