import SluiceCore
public import SluiceSink

/// A fault policy scripted per event, for tests.
public struct ScriptedFaults: ServerPolicy {
    public var onCommand: [String: ServerFault] = [:]
    public var onRecipient: [String: ServerFault] = [:]
    public var onEndOfData: ServerFault?

    /// No faults until some are scripted.
    public init() {}

    public mutating func decide(_ event: ServerPolicyEvent) -> ServerFault? {
        switch event {
        case .connected: nil
        case .command(let verb): onCommand[verb]
        case .recipient(let address, _): onRecipient[address.address]
        case .endOfData: onEndOfData
        }
    }
}

public typealias Server = ServerStateMachine

/// Drives a server machine: client text in, replies out; stores messages at once unless told.
public struct ServerHarness {
    public var machine: Server
    public var stored: [ReceivedMessage] = []
    public var closed = false
    public var startedTLS = false
    public var holdDeliveries = false
    public var waiting: ReceivedMessage?

    public init(_ configuration: Server.Configuration = .init(), faults: ScriptedFaults = .init()) {
        machine = Server(configuration: configuration, policy: faults)
    }

    public mutating func apply(_ actions: [Server.Action]) -> String {
        var written = ""
        for action in actions {
            switch action {
            case .write(let bytes): written += String(decoding: bytes, as: UTF8.self)
            case .startTLS: startedTLS = true
            case .close: closed = true
            case .authenticationFailed, .hold:
                written += apply(machine.holdEnded())
            case .deliver(let message):
                if holdDeliveries {
                    waiting = message
                } else {
                    stored.append(message)
                    written += apply(machine.deliveryFinished(.stored(id: "M\(stored.count)")))
                }
            }
        }
        return written
    }

    public mutating func connect(secure: Bool = false) -> String { apply(machine.connected(secure: secure)) }
    @discardableResult
    public mutating func client(_ text: String) -> String { apply(machine.bytesReceived(Array(text.utf8))) }
    @discardableResult
    public mutating func client(_ bytes: [UInt8]) -> String { apply(machine.bytesReceived(bytes)) }

    /// The reply codes in `text`, one per reply (continuation lines skipped).
    public static func codes(_ text: String) -> [String] {
        text.split(separator: "\r\n").filter { $0.count >= 4 && $0.dropFirst(3).first == " " || $0.count == 3 }.map { String($0.prefix(3)) }
    }
}
