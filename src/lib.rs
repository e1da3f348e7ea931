pub mod diagnostic;
pub mod source_map;
pub mod task {
    pub mod yaml;
}
