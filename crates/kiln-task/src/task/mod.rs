//! Task files: from the text a user wrote to a validated task and its step graph.

pub mod alias;
pub mod dag;
pub mod load;
pub mod model;
pub mod parse;
pub mod preprocess;
pub mod yaml;
