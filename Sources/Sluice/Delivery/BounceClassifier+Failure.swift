import SluiceCore
import SluiceTransport

extension BounceClassifier {
    /// The class of a recipient that was not accepted: from its reply when one came, else
    /// from the failure that left it without one.
    public func classify(_ reply: SMTPReply?, error: SMTPError?) -> BounceClass {
        if let reply { return classify(reply) }
        guard let error else { return .connection }
        // A reply that broke the protocol (a 250 where none belongs) says nothing of why.
        if error.kind == .protocolViolation { return .protocol }
        if let reply = error.reply, !reply.code.isPositiveCompletion { return classify(reply) }
        if let session = error.sessionError, let code = session.enhancedCode {
            // A refusal made here (the server's SIZE, say): its code decides, as a server's
            // would; no reply code, so rules on reply codes do not match it.
            return classify(code: 0, enhancedCode: code, text: session.detail)
        }
        if let transport = error.transportError {
            if transport.kind == .hostNotFound || transport.kind == .lookupFailed { return .routing }
            if transport.kind == .tls { return .tls }
        }
        switch error.kind {
        case .tls: return .tls
        case .protocolViolation: return .protocol
        case .authentication: return .policy
        case .connection, .timeout, .unknownOutcome: return .connection
        default: return .other
        }
    }
}
