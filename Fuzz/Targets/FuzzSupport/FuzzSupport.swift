import CLibFuzzer

/// The C signature of a target's `LLVMFuzzerTestOneInput`.
public typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

/// Hands a target's input function to libFuzzer's driver.
///
/// SwiftPM links an executable's entry point as `<Target>_main`, so each target declares that
/// symbol and calls this; libFuzzer's own `main` is then never pulled from its archive.
public func runFuzzer(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                      _ testOneInput: TestOneInput) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, testOneInput)
}

/// A property of the code under test: when it does not hold, the fuzzer stops with `message`
/// and writes the input as an artifact. (A `precondition`'s message is dropped in the
/// optimised builds that fuzzing needs; `fatalError`'s is kept.)
public func require(_ condition: Bool, _ message: @autoclosure () -> String,
                    file: StaticString = #fileID, line: UInt = #line) {
    if !condition { fatalError(message(), file: file, line: line) }
}
