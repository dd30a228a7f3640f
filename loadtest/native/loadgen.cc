// A compiled closed-loop load generator: the same runs as loadtest/clients.py's
// Python clients (pre-encoded requests, one in flight per slot, a warm-up, a measured
// window, CPU read at the window's edges), for less client CPU per request. On this
// project's 2-core machine the load generator shares the cores with the servers it
// measures (docs/benchmarks.md), so what it spends is taken from them.
//
// Protocols:
//   http1  one keep-alive HTTP/1.1 connection per slot, all driven by one epoll loop;
//          the request bytes are sent as given, the status line and Content-Length read.
//   grpc   unary calls of one method through grpc++'s generic stub (bytes in, bytes out,
//          no protobuf work), one channel per slot or one shared; one completion queue.
//   grpc-h2  the same calls written as gRPC's HTTP/2 frames with nghttp2 (one session per
//          connection, one connection per slot or one shared, all in one epoll loop, no
//          thread of its own): grpc++ spends about 0.1 ms of CPU per call in its own
//          threads, which on 2 cores is taken from the servers measured. A call's status is
//          its grpc-status trailer; the deadline travels as grpc-timeout (the server
//          enforces it; calls still open after the drain count as timeouts, as above).
//
// Usage (loadtest/native/__init__.py builds and runs it):
//   loadgen PROTOCOL HOST PORT REQUESTS_FILE CONCURRENCY WARMUP_S DURATION_S DRAIN_S
//           CHANNELS DEADLINE_S SAMPLES_FILE [ROLE:PID ...]
// REQUESTS_FILE holds the requests as (u32 little-endian length, bytes) records. The
// samples of the measured window go to SAMPLES_FILE as int64 triples (latency_ns,
// done_ns, ok); everything else is printed on stdout as one JSON object.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <nghttp2/nghttp2.h>

namespace {

enum Phase { WARMUP, MEASURE, STOP };

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double own_cpu_s() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);  // every thread of this process, grpc's own included
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double proc_cpu_s(int pid) {  // utime + stime of a process, as loadtest/clients.py reads them
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = fopen(path, "r");
  if (!f) return -1;
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char* p = strrchr(buf, ')');
  if (!p) return -1;
  p += 2;
  unsigned long long utime = 0, stime = 0;
  for (int field = 3; field <= 15 && *p; ++field) {  // proc(5): fields 14 and 15
    if (field == 14) utime = strtoull(p, nullptr, 10);
    if (field == 15) stime = strtoull(p, nullptr, 10);
    p = strchr(p, ' ');
    if (!p) break;
    ++p;
  }
  return double(utime + stime) / sysconf(_SC_CLK_TCK);
}

struct Options {
  std::string protocol, host, requests_file, channels, samples_file;
  int port = 0, concurrency = 1;
  double warmup_s = 0, duration_s = 0, drain_s = 0, deadline_s = 0;
  std::vector<std::pair<std::string, int>> pids;
};

// The state of one run: phase, request cursor, samples, window marks (clients.py's Recorder).
struct Recorder {
  const Options& opt;
  std::vector<std::string> requests;
  size_t next = 0;
  Phase phase = WARMUP;
  int64_t start_ns = 0, t0_ns = 0, t1_ns = 0;
  std::vector<int64_t> samples;  // latency_ns, done_ns, ok
  std::map<std::string, long> statuses, protocol_errors;
  std::map<std::string, double> marks;
  long warmup_completed = 0, body_bytes = 0, timeouts = 0;

  explicit Recorder(const Options& o) : opt(o) {}

  const std::string& next_request() {
    const std::string& r = requests[next];
    next = next + 1 < requests.size() ? next + 1 : 0;
    return r;
  }

  void mark(const std::string& name) {
    marks[name + "_client_cpu_s"] = own_cpu_s();
    for (auto& [role, pid] : opt.pids) marks[name + "_" + role + "_cpu_s"] = proc_cpu_s(pid);
  }

  // Opens or closes the window when its time has come; returns ns to the next edge (or -1).
  int64_t tick(int64_t now) {
    if (phase == WARMUP && now >= t0_ns) {
      t0_ns = now;
      mark("t0");
      phase = MEASURE;
      t1_ns = t0_ns + int64_t(opt.duration_s * 1e9);
    }
    if (phase == MEASURE && now >= t1_ns) {
      t1_ns = now;
      mark("t1");
      phase = STOP;
    }
    if (phase == WARMUP) return t0_ns - now;
    if (phase == MEASURE) return t1_ns - now;
    return -1;
  }

  void record(int64_t latency, const std::string& status, bool ok, long bytes) {
    if (phase == MEASURE) {
      samples.push_back(latency);
      samples.push_back(now_ns());
      samples.push_back(ok);
      statuses[status] += 1;
      body_bytes += bytes;
    } else if (phase == WARMUP) {
      ++warmup_completed;
    }
  }

  void protocol_error(const std::string& reason) {
    if (phase == MEASURE) protocol_errors[reason] += 1;
  }

  void start() {
    start_ns = now_ns();
    t0_ns = start_ns + int64_t(opt.warmup_s * 1e9);
  }

  int64_t drain_deadline() const { return t1_ns + int64_t(opt.drain_s * 1e9); }

  // How long to wait for completions: until the next window edge, or after the window
  // until the drain's end; -1 when the run is over (nothing left in flight after the
  // window, or the drain ran out: what is still in flight counts as timeouts).
  int64_t wait_ns(long in_flight) {
    int64_t now = now_ns();
    int64_t to_edge = tick(now);
    if (phase != STOP) return to_edge;
    if (in_flight == 0) return -1;
    if (now >= drain_deadline()) {
      timeouts = in_flight;
      return -1;
    }
    return drain_deadline() - now;
  }
};

std::string json_str(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

void report(const Recorder& rec) {
  FILE* f = fopen(rec.opt.samples_file.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + rec.opt.samples_file);
  fwrite(rec.samples.data(), sizeof(int64_t), rec.samples.size(), f);
  fclose(f);
  std::string out = "{\"t0_ns\": " + std::to_string(rec.t0_ns) + ", \"t1_ns\": " + std::to_string(rec.t1_ns);
  for (auto& [k, v] : rec.marks) {
    char num[64];
    snprintf(num, sizeof num, "%.6f", v);
    out += ", " + json_str(k) + ": " + num;
  }
  auto counts = [&](const char* name, const std::map<std::string, long>& m) {
    out += std::string(", \"") + name + "\": {";
    bool first = true;
    for (auto& [k, v] : m) {
      out += (first ? "" : ", ") + json_str(k) + ": " + std::to_string(v);
      first = false;
    }
    out += "}";
  };
  counts("statuses", rec.statuses);
  counts("protocol_errors", rec.protocol_errors);
  out += ", \"warmup_completed\": " + std::to_string(rec.warmup_completed);
  out += ", \"body_bytes\": " + std::to_string(rec.body_bytes);
  out += ", \"timeouts\": " + std::to_string(rec.timeouts) + "}";
  puts(out.c_str());
}

// ------------------------------------------------------------------------- HTTP/1.1

struct Conn {
  int fd = -1;
  bool busy = false;
  int64_t sent_ns = 0;
  std::string head;
  long remaining = -1;  // body bytes still to come; -1 while reading the head
  int status = 0;
  long length = 0;
};

int connect_to(const Options& opt) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = std::to_string(opt.port);
  if (getaddrinfo(opt.host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    throw std::runtime_error("cannot resolve " + opt.host);
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    freeaddrinfo(res);
    throw std::runtime_error(std::string("cannot connect: ") + strerror(errno));
  }
  freeaddrinfo(res);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Makes `fd` non-blocking and has epoll `ep` report it readable, tagged with `index`.
void watch(int ep, int fd, uint32_t index) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = index;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

class Http1Run {
 public:
  explicit Http1Run(Recorder& rec) : rec_(rec), conns_(rec.opt.concurrency) {
    ep_ = epoll_create1(0);
    for (auto& c : conns_) open(c);
  }

  void run() {
    rec_.start();
    for (auto& c : conns_) send(c);
    epoll_event events[64];
    char buf[65536];
    for (;;) {
      int64_t wait = rec_.wait_ns(busy_);
      if (wait < 0) break;
      int wait_ms = int(wait / 1000000) + 1;
      int n = epoll_wait(ep_, events, 64, wait_ms);
      for (int i = 0; i < n; ++i) {
        Conn& c = conns_[events[i].data.u32];
        if (c.fd < 0) continue;
        // The body is only counted: once its length is known, the kernel discards it
        // (MSG_TRUNC on TCP, tcp(7)) instead of copying it out.
        ssize_t got = c.remaining > 0 ? recv(c.fd, nullptr, size_t(c.remaining), MSG_TRUNC | MSG_DONTWAIT)
                                      : read(c.fd, buf, sizeof buf);
        if (got > 0) {
          received(c, buf, got);
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          failed(c, "connection lost");
        }
      }
    }
    for (auto& c : conns_)
      if (c.fd >= 0) close(c.fd);
  }

 private:
  Recorder& rec_;
  std::vector<Conn> conns_;
  int ep_ = -1;
  long busy_ = 0;
  long reconnects_ = 0;

  void open(Conn& c) {
    c.fd = connect_to(rec_.opt);
    watch(ep_, c.fd, uint32_t(&c - conns_.data()));
  }

  void send(Conn& c) {
    const std::string& r = rec_.next_request();
    c.head.clear();
    c.remaining = -1;
    if (!c.busy) ++busy_;
    c.busy = true;
    c.sent_ns = now_ns();
    size_t off = 0;
    while (off < r.size()) {  // requests are a few kB: the socket buffer takes them at once
      ssize_t w = write(c.fd, r.data() + off, r.size() - off);
      if (w > 0) {
        off += size_t(w);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        failed(c, "connection lost");
        return;
      }
    }
  }

  void idle(Conn& c) {
    if (c.busy) --busy_;
    c.busy = false;
  }

  void received(Conn& c, const char* data, ssize_t n) {
    if (c.remaining >= 0) {
      c.remaining -= n;
    } else {
      c.head.append(data, size_t(n));
      size_t end = c.head.find("\r\n\r\n");
      if (end == std::string::npos) return;
      std::string lower = c.head.substr(0, end);
      for (auto& ch : lower) ch = char(tolower(static_cast<unsigned char>(ch)));
      size_t at = lower.find("\r\ncontent-length:");
      if (c.head.size() < 12 || at == std::string::npos) {
        failed(c, "response without status or Content-Length");
        return;
      }
      c.status = atoi(c.head.c_str() + 9);
      c.length = atol(lower.c_str() + at + 17);
      c.remaining = c.length - long(c.head.size() - end - 4);
    }
    if (c.remaining == 0) {
      int64_t latency = now_ns() - c.sent_ns;
      c.remaining = -1;
      rec_.record(latency, std::to_string(c.status), c.status == 200, c.length);
      if (rec_.phase == STOP) {
        idle(c);
      } else {
        send(c);
      }
    } else if (c.remaining < 0) {
      failed(c, "more bytes than Content-Length");
    }
  }

  void failed(Conn& c, const char* reason) {
    rec_.protocol_error(reason);
    idle(c);
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
    if (rec_.phase == STOP) return;
    if (++reconnects_ > 1000) throw std::runtime_error(std::string("too many connection errors (") + reason + ")");
    open(c);
    send(c);
  }
};

// ------------------------------------------------------------------------- gRPC

const char kMethodPath[] = "/livefeat.v1.FeatureService/GetBundle";  // both gRPC runs call it

const char* code_name(grpc::StatusCode code) {
  static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int i = int(code);
  return i >= 0 && i < 17 ? names[i] : "UNKNOWN";
}

struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  int64_t sent_ns = 0;
  size_t slot = 0;
};

class GrpcRun {
 public:
  explicit GrpcRun(Recorder& rec) : rec_(rec) {
    const Options& opt = rec.opt;
    size_t n = opt.channels == "per-slot" ? size_t(opt.concurrency) : 1;
    std::string target = opt.host + ":" + std::to_string(opt.port);
    for (size_t i = 0; i < n; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);  // else equal channels share a connection
      args.SetMaxReceiveMessageSize(-1);
      auto ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
      if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
        throw std::runtime_error("cannot connect to " + target);
      stubs_.push_back(std::make_unique<grpc::GenericStub>(ch));
      channels_.push_back(ch);
    }
    for (const auto& r : rec.requests) {
      grpc::Slice slice(r.data(), r.size());
      buffers_.emplace_back(&slice, 1);
    }
  }

  void run() {
    rec_.start();
    for (size_t slot = 0; slot < size_t(rec_.opt.concurrency); ++slot) send(slot);
    for (;;) {
      int64_t wait = rec_.wait_ns(in_flight_);
      if (wait < 0) break;
      void* tag;
      bool ok;
      auto deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(wait, GPR_TIMESPAN));
      auto got = cq_.AsyncNext(&tag, &ok, deadline);
      if (got == grpc::CompletionQueue::SHUTDOWN) break;
      if (got != grpc::CompletionQueue::GOT_EVENT) continue;
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      --in_flight_;
      int64_t latency = now_ns() - call->sent_ns;
      bool good = call->status.ok();
      rec_.record(latency, code_name(call->status.error_code()), good, good ? long(call->response.Length()) : 0);
      if (rec_.phase != STOP) send(call->slot);
    }
    // Calls still in flight after the drain are cancelled and their tags drained.
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) delete static_cast<Call*>(tag);
  }

 private:
  Recorder& rec_;
  grpc::CompletionQueue cq_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::vector<grpc::ByteBuffer> buffers_;
  size_t cursor_ = 0;
  long in_flight_ = 0;

  void send(size_t slot) {
    auto* call = new Call;
    call->slot = slot;
    if (rec_.opt.deadline_s > 0)
      call->ctx.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::microseconds(int64_t(rec_.opt.deadline_s * 1e6)));
    const grpc::ByteBuffer& request = buffers_[cursor_];
    cursor_ = cursor_ + 1 < buffers_.size() ? cursor_ + 1 : 0;
    call->sent_ns = now_ns();
    call->reader = stubs_[slot % stubs_.size()]->PrepareUnaryCall(&call->ctx, kMethodPath,
                                                                 request, &cq_);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
    ++in_flight_;
  }
};


// ------------------------------------------------------------------------- gRPC over nghttp2

struct H2Conn;

struct H2Call {  // one call in flight
  H2Conn* conn = nullptr;
  const std::string* frame = nullptr;  // the gRPC message: 5-byte prefix + request
  size_t offset = 0;                   // bytes of `frame` handed to nghttp2 so far
  int64_t sent_ns = 0;
  int http_status = 0;
  int grpc_status = -1;  // -1: no grpc-status header (yet)
  long data_bytes = 0;
};

struct H2Conn {
  int fd = -1;
  nghttp2_session* session = nullptr;
  std::set<H2Call*> calls;  // in flight on this connection
  bool dying = false;       // being torn down: stream-close callbacks are ignored
};

class H2GrpcRun {
 public:
  explicit H2GrpcRun(Recorder& rec) : rec_(rec) {
    const Options& opt = rec.opt;
    conns_.resize(opt.channels == "per-slot" ? size_t(opt.concurrency) : 1);
    authority_ = opt.host + ":" + std::to_string(opt.port);
    if (opt.deadline_s > 0) timeout_ = std::to_string(int64_t(opt.deadline_s * 1000 + 0.5)) + "m";
    for (const auto& r : rec.requests) {  // gRPC framing: uncompressed, u32 BE length
      std::string f(5, '\0');
      uint32_t n = htonl(uint32_t(r.size()));
      memcpy(&f[1], &n, 4);
      frames_.push_back(f + r);
    }
    nghttp2_session_callbacks_new(&callbacks_);
    nghttp2_session_callbacks_set_on_header_callback(callbacks_, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks_, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks_, on_close);
    ep_ = epoll_create1(0);
    for (auto& c : conns_) open(c);
  }

  ~H2GrpcRun() {
    for (auto& c : conns_) shut(c);
    nghttp2_session_callbacks_del(callbacks_);
    if (ep_ >= 0) close(ep_);
  }

  void run() {
    rec_.start();
    for (size_t slot = 0; slot < size_t(rec_.opt.concurrency); ++slot) submit(conns_[slot % conns_.size()]);
    for (auto& c : conns_) flush(c);
    epoll_event events[64];
    static char buf[1 << 16];
    for (;;) {
      int64_t wait = rec_.wait_ns(in_flight_);
      if (wait < 0) break;
      int n = epoll_wait(ep_, events, 64, int(wait / 1000000) + 1);
      for (int i = 0; i < n; ++i) {
        H2Conn& c = conns_[events[i].data.u32];
        if (c.fd < 0) continue;
        ssize_t got = read(c.fd, buf, sizeof buf);
        if (got > 0) {
          if (nghttp2_session_mem_recv(c.session, reinterpret_cast<uint8_t*>(buf), size_t(got)) < 0) {
            failed(c, "bad HTTP/2 from the server");
            continue;
          }
          flush(c);
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          failed(c, "connection lost");
        }
      }
    }
  }

 private:
  Recorder& rec_;
  std::vector<H2Conn> conns_;
  std::vector<std::string> frames_;
  std::string authority_, timeout_;
  std::string out_;  // what flush() writes
  nghttp2_session_callbacks* callbacks_ = nullptr;
  size_t cursor_ = 0;
  long in_flight_ = 0;
  long reconnects_ = 0;
  int ep_ = -1;

  void open(H2Conn& c) {
    c.fd = connect_to(rec_.opt);
    c.dying = false;
    nghttp2_session_client_new(&c.session, callbacks_, this);
    // Wide windows: a response is never held back waiting for a WINDOW_UPDATE.
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
    nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(c.session, NGHTTP2_FLAG_NONE, 0, 1 << 26);
    flush(c);  // the connection preface, before the socket goes non-blocking
    watch(ep_, c.fd, uint32_t(&c - conns_.data()));
  }

  void shut(H2Conn& c) {
    c.dying = true;
    if (c.session) nghttp2_session_del(c.session);
    c.session = nullptr;
    for (H2Call* call : c.calls) delete call;
    c.calls.clear();
    if (c.fd >= 0) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      close(c.fd);
    }
    c.fd = -1;
  }

  static nghttp2_nv header(const char* name, const std::string& value) {
    return {(uint8_t*)name, (uint8_t*)value.data(), strlen(name), value.size(),
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  }

  void submit(H2Conn& c) {
    static const std::string post = "POST", http = "http", path = kMethodPath, grpc = "application/grpc",
                             trailers = "trailers";
    auto* call = new H2Call;
    call->conn = &c;
    call->frame = &frames_[cursor_];
    cursor_ = cursor_ + 1 < frames_.size() ? cursor_ + 1 : 0;
    nghttp2_nv nva[7] = {header(":method", post),       header(":scheme", http),
                         header(":path", path),         header(":authority", authority_),
                         header("content-type", grpc),  header("te", trailers),
                         header("grpc-timeout", timeout_)};
    nghttp2_data_provider body{};
    body.source.ptr = call;
    body.read_callback = read_body;
    call->sent_ns = now_ns();
    if (nghttp2_submit_request(c.session, nullptr, nva, timeout_.empty() ? 6 : 7, &body, call) < 0) {
      delete call;
      throw std::runtime_error("nghttp2 refused a request");
    }
    c.calls.insert(call);
    ++in_flight_;
  }

  static ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                           nghttp2_data_source* source, void*) {
    auto* call = static_cast<H2Call*>(source->ptr);
    size_t n = std::min(length, call->frame->size() - call->offset);
    memcpy(buf, call->frame->data() + call->offset, n);
    call->offset += n;
    if (call->offset == call->frame->size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return ssize_t(n);
  }

  // Writes what the session has to send, gathered into one write (nghttp2 hands it out a
  // frame at a time); a full socket buffer is waited out (requests are a few kB: rare).
  void flush(H2Conn& c) {
    out_.clear();
    for (;;) {
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(c.session, &data);
      if (n < 0) throw std::runtime_error(std::string("nghttp2: ") + nghttp2_strerror(int(n)));
      if (n == 0) break;
      out_.append(reinterpret_cast<const char*>(data), size_t(n));
    }
    for (size_t off = 0; off < out_.size();) {
      ssize_t w = write(c.fd, out_.data() + off, out_.size() - off);
      if (w > 0) {
        off += size_t(w);
      } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        pollfd p{c.fd, POLLOUT, 0};
        poll(&p, 1, 1000);
      } else {
        return;  // the read side sees the loss and reconnects
      }
    }
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    auto* call = static_cast<H2Call*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!call) return 0;
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) call->http_status = atoi(v.c_str());
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) call->grpc_status = atoi(v.c_str());
    return 0;
  }

  static int on_data(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t*, size_t len,
                     void*) {
    auto* call = static_cast<H2Call*>(nghttp2_session_get_stream_user_data(session, stream_id));
    if (call) call->data_bytes += long(len);
    return 0;
  }

  static int on_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* self) {
    auto* call = static_cast<H2Call*>(nghttp2_session_get_stream_user_data(session, stream_id));
    auto* run = static_cast<H2GrpcRun*>(self);
    if (!call || call->conn->dying) return 0;
    run->finished(call, error_code);
    return 0;
  }

  void finished(H2Call* call, uint32_t error_code) {
    H2Conn& c = *call->conn;
    c.calls.erase(call);
    --in_flight_;
    int64_t latency = now_ns() - call->sent_ns;
    // No grpc-status: a reset stream (REFUSED_STREAM: UNAVAILABLE, as grpc maps it) or a
    // response that is not gRPC's (INTERNAL).
    int code = call->grpc_status >= 0 ? call->grpc_status
               : error_code == NGHTTP2_REFUSED_STREAM ? int(grpc::StatusCode::UNAVAILABLE)
                                                      : int(grpc::StatusCode::INTERNAL);
    bool good = code == 0 && call->http_status == 200;
    long message = call->data_bytes >= 5 ? call->data_bytes - 5 : 0;  // one message: its prefix
    rec_.record(latency, code_name(grpc::StatusCode(code)), good, good ? message : 0);
    delete call;
    if (rec_.phase != STOP) submit(c);  // sent by the flush after this read
  }

  void failed(H2Conn& c, const char* reason) {
    size_t lost = c.calls.size();
    for (size_t i = 0; i < lost; ++i) rec_.protocol_error(reason);
    in_flight_ -= long(lost);
    shut(c);
    if (rec_.phase == STOP) return;
    if (++reconnects_ > 1000) throw std::runtime_error(std::string("too many connection errors (") + reason + ")");
    open(c);
    for (size_t i = 0; i < lost; ++i) submit(c);
    flush(c);
  }
};

std::vector<std::string> read_requests(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> out;
  uint32_t len;
  while (fread(&len, 4, 1, f) == 1) {
    std::string r(len, '\0');
    if (fread(r.data(), 1, len, f) != len) throw std::runtime_error("truncated requests file " + path);
    out.push_back(std::move(r));
  }
  fclose(f);
  if (out.empty()) throw std::runtime_error("no requests in " + path);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 12) {
    fprintf(stderr,
            "usage: %s PROTOCOL HOST PORT REQUESTS_FILE CONCURRENCY WARMUP_S DURATION_S DRAIN_S "
            "CHANNELS DEADLINE_S SAMPLES_FILE [ROLE:PID ...]\n",
            argv[0]);
    return 2;
  }
  try {
    Options opt;
    opt.protocol = argv[1];
    opt.host = argv[2];
    opt.port = atoi(argv[3]);
    opt.requests_file = argv[4];
    opt.concurrency = atoi(argv[5]);
    opt.warmup_s = atof(argv[6]);
    opt.duration_s = atof(argv[7]);
    opt.drain_s = atof(argv[8]);
    opt.channels = argv[9];
    opt.deadline_s = atof(argv[10]);
    opt.samples_file = argv[11];
    for (int i = 12; i < argc; ++i) {
      std::string a = argv[i];
      size_t colon = a.find(':');
      if (colon == std::string::npos) throw std::runtime_error("expected ROLE:PID, got " + a);
      opt.pids.emplace_back(a.substr(0, colon), atoi(a.c_str() + colon + 1));
    }
    if (opt.concurrency < 1) throw std::runtime_error("concurrency must be at least 1");
    Recorder rec(opt);
    rec.requests = read_requests(opt.requests_file);
    if (opt.protocol == "http1") {
      Http1Run(rec).run();
    } else if (opt.protocol == "grpc") {
      GrpcRun(rec).run();
    } else if (opt.protocol == "grpc-h2") {
      H2GrpcRun(rec).run();
    } else {
      throw std::runtime_error("unknown protocol " + opt.protocol);
    }
    if (rec.phase != STOP) throw std::runtime_error("the run ended before its measured window closed");
    report(rec);
  } catch (const std::exception& e) {
    fprintf(stderr, "loadgen: %s\n", e.what());
    return 1;
  }
  return 0;
}
