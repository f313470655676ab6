// librefwatch.so resolves the interpreter's functions with dlsym at run
// time and links nothing else but libc: any undefined symbol is a bug (a
// symbol of refwatch's own assembly not made global, say), so refuse to link
// one rather than fail in the user's process.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
}
