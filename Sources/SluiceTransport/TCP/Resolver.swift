import CLibUV
#if canImport(Glibc)
import Glibc
#endif

extension EventLoop {
    /// Resolves `host` to its IPv4 and IPv6 addresses with `uv_getaddrinfo`, in the order the
    /// system prefers. An IP literal is returned at once, without a lookup.
    ///
    /// - Throws: ``TransportError/Kind/hostNotFound`` when the name has no address, or
    ///   ``TransportError/Kind/lookupFailed`` when the resolver failed or did not answer.
    public func resolve(host: String, port: Int) async throws -> [SocketAddress] {
        try await perform("resolve \(host)") { (operation: LoopOperation<[SocketAddress]>) in
            let request = ResolveRequest(loop: self)
            operation.onCancel = { request.close(dueTo: TransportError(.connectionClosed, "resolution cancelled")) }
            request.start(host: host, port: port) { result in
                switch result {
                case .success(let addresses): operation.succeed(addresses)
                case .failure(let error): operation.fail(error)
                }
            }
        }
    }
}

/// One `uv_getaddrinfo` request. Loop thread only.
final class ResolveRequest: LoopResource {
    let loop: EventLoop
    private var request: UnsafeMutablePointer<uv_getaddrinfo_t>?
    private var completion: ((Result<[SocketAddress], TransportError>) -> Void)?
    private var host = ""

    init(loop: EventLoop) { self.loop = loop }

    /// Starts the lookup; `completion` runs once on the loop, unless the request is closed first.
    func start(host: String, port: Int, completion: @escaping (Result<[SocketAddress], TransportError>) -> Void) {
        loop.assertInEventLoop()
        self.host = host
        if SocketAddress.isIPLiteral(host) {
            do {
                completion(.success([try SocketAddress(ipAddress: host, port: port)]))
            } catch {
                completion(.failure(error))
            }
            return
        }
        guard (0...65535).contains(port) else {
            completion(.failure(TransportError(.invalidArgument, "port \(port) is outside 0...65535")))
            return
        }
        self.completion = completion
        let request = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        // Retained while libuv holds the request; released once, in resolveFinished.
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.request = request
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        let status = uv_getaddrinfo(loop.uvLoop, request, resolveFinished, host, String(port), &hints)
        if status != 0 {
            Unmanaged<ResolveRequest>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            self.request = nil
            finish(.failure(.uv(status, "resolving \(host)")))
            return
        }
        loop.register(self)
    }

    /// Asks libuv to cancel the lookup and drops the completion; the request's memory is
    /// still freed in its callback.
    func close(dueTo error: TransportError) {
        if let request {
            uv_cancel(UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_req_t.self))
        }
        finish(.failure(error))
    }

    fileprivate func finished(status: Int32, result: UnsafeMutablePointer<addrinfo>?) {
        loop.deregister(self)
        request = nil
        guard status == 0 else {
            finish(.failure(.uv(status, "resolving \(host)")))
            return
        }
        var addresses: [SocketAddress] = []
        var entry = result
        while let current = entry {
            if let sockaddr = current.pointee.ai_addr, let address = SocketAddress(sockaddr),
                !addresses.contains(address) {
                addresses.append(address)
            }
            entry = current.pointee.ai_next
        }
        if addresses.isEmpty {
            finish(.failure(TransportError(.hostNotFound, "\(host) has no IPv4 or IPv6 address")))
        } else {
            finish(.success(addresses))
        }
    }

    private func finish(_ result: Result<[SocketAddress], TransportError>) {
        let completion = self.completion
        self.completion = nil
        completion?(result)
    }
}

private func resolveFinished(
    _ request: UnsafeMutablePointer<uv_getaddrinfo_t>?, _ status: Int32, _ result: UnsafeMutablePointer<addrinfo>?
) {
    // Safe: the request's data is the ResolveRequest retained in start(); released once here.
    let owner = Unmanaged<ResolveRequest>.fromOpaque(request!.pointee.data).takeRetainedValue()
    owner.finished(status: status, result: result)
    uv_freeaddrinfo(result)
    request!.deallocate()
}
