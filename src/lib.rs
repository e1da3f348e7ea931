pub mod config;
pub mod diagnostic;
pub mod source_map;
pub mod task {
    pub mod alias;
    pub mod preprocess;
    pub mod yaml;
}
