//! Throwaway TLS material for tests: a CA made in the test itself and server certificates it
//! signs, written as PEM files into a temporary directory. No key is ever checked in.
#![allow(dead_code)] // each includer uses its own part

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A private CA and the directory its files live in.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    /// The CA certificate, PEM: what `--ca-file` is given.
    pub cert: PathBuf,
}

/// A server certificate (chain: leaf then CA) and its key, PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, format!("kiln test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("ca.pem");
        std::fs::write(&cert, issuer.pem()).expect("CA file");
        TestCa { issuer, dir, cert }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params.distinguished_name.push(DnType::CommonName, names[0].clone());
        let key = KeyPair::generate().expect("server key");
        let leaf = params.signed_by(&key, &self.issuer).expect("server certificate");
        let stem = names[0].replace([':', '/'], "_");
        let cert = self.dir.path().join(format!("{stem}.pem"));
        let key_file = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert, format!("{}{}", leaf.pem(), self.issuer.pem())).expect("cert file");
        std::fs::write(&key_file, key.serialize_pem()).expect("key file");
        ServerCert { cert, key: key_file }
    }
}
