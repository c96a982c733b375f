import Foundation
import SluiceTestSupport
import Testing

/// The test support's process runner, which every peer and command test goes through.
@Suite("ChildProcess")
struct ChildProcessTests {
    @Test func largeInputAndOutputFlowAtOnceWithoutDeadlock() throws {
        // 4 MiB through `cat` fills both pipes many times over: a runner that wrote all of
        // its input before reading would hang here.
        let input = String(repeating: "0123456789abcdef\n", count: 4 << 16)
        let result = try run("/bin/cat", [], input: input)
        #expect(result.status == 0)
        #expect(result.output == input)
    }

    @Test func exitStatusesAndStandardErrorComeBack() throws {
        let result = try run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(result.status == 3)
        #expect(result.output == "out\n")
        #expect(result.error == "err\n")
        let killed = try run("/bin/sh", ["-c", "kill -TERM $$"])
        #expect(killed.status == 128 + SIGTERM)
    }

    @Test func theChildInheritsNoDescriptorAboveStandardError() throws {
        // A socket made without SOCK_CLOEXEC, as raw test clients make them.
        let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socketDescriptor) }
        let result = try run("/bin/ls", ["/proc/self/fd"])
        let descriptors = result.output.split(separator: "\n").compactMap { Int($0) }
        // ls itself holds one more, the directory it reads.
        #expect(descriptors.filter { $0 > 2 }.count <= 1, "\(descriptors)")
    }

    @Test func aChildStartsWithSIGTERMAtItsDefault() async throws {
        let previous = signal(SIGTERM, SIG_IGN)
        defer { signal(SIGTERM, previous) }
        // The child outlives any slowness of the test (under ASan on a loaded machine, 30 s
        // once passed between its start and the stop, and `sleep 30` had exited 0 by itself);
        // stop() ends it either way.
        let child = try ChildProcess("/bin/sh", ["-c", "echo ready; exec sleep 600"])
        #expect(try await child.firstOutputLine(within: .seconds(20)) == "ready")
        #expect(child.stop(grace: .seconds(10)) == 128 + SIGTERM, "SIGTERM, not the SIGKILL after the grace")
    }

    @Test func runsInTheDirectoryItIsGiven() throws {
        let result = try run("/bin/pwd", [], in: "/tmp")
        #expect(result.output == "/tmp\n")
    }
}
