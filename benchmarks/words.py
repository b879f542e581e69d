"""Vocabulary of the benchmark corpus: general English (roughly by frequency) and per-doc-type terms.

Kept in code (no download, no dictionary file) so the corpus is the same on every machine.
"""

from __future__ import annotations

# Function words first, in rough frequency order: the Zipf ranks of the generator follow this order.
FUNCTION_WORDS = """
the of and to a in is that for it as with be on this by are or from at an not can you which
we if but will has have was all its more when one their also they these may other than each
only into so there such any no use used using then how both should must would been what where
some most about our do does up out over new first after between them through same because while
""".split()

# Content words common in technical documentation (unordered; the generator shuffles them once with a
# fixed permutation, so their ranks are stable across seeds).
CONTENT_WORDS = """
system data value time file user server client request response error type name example default
set list number key field table query index version support build release configuration option
mode state process thread memory network address port service cluster node pod container image
policy rule access token account program instruction transaction block chain fee price market
pool swap route order limit rate quote balance amount supply program module function method class
object struct trait interface package library crate dependency feature test benchmark debug log
event message queue stream channel buffer packet frame header payload body status code path route
endpoint resource schema format document section page chapter guide reference tutorial overview
install upgrade deploy configure enable disable create delete update read write open close start
stop restart run execute call return check verify validate parse encode decode load store send
receive connect listen bind attach detach mount unmount allocate free lock unlock wait signal
handle manage monitor trace measure report export import migrate backup restore rollback commit
large small fast slow simple complex local remote public private internal external secure safe
stable current previous next last initial final optional required available specific general
common different similar multiple single several many few every another whole entire complete
partial valid invalid empty full active inactive pending running failed successful automatic
manual dynamic static global shared unique primary secondary native custom standard specific
performance latency throughput bandwidth capacity storage disk volume snapshot replica leader
follower peer consensus validator slot epoch stake vote reward signature hash key pair seed
wallet mint program account owner authority signer payer recipient sender instruction data
kernel socket interface device driver hook probe map verifier helper bytecode register stack
heap pointer reference lifetime borrow ownership macro closure iterator generator future async
await task runtime executor scheduler worker pipeline batch job cron schedule trigger sensor
asset partition shard replica cache hit miss eviction expiry timeout retry backoff jitter
certificate secret credential permission role binding namespace label selector annotation
ingress egress gateway proxy load balancer firewall identity encryption tunnel overlay routing
protocol specification section requirement implementation behaviour compliance extension header
field encoding transport connection session stream frame priority flow control congestion
notebook cell kernel output plot figure dataframe array matrix vector tensor model training
prediction dataset feature column row chart widget variable expression statement loop branch
condition exception warning failure success result output input parameter argument flag command
terminal shell script environment variable directory folder repository branch commit merge
review issue bug fix patch change note caveat limitation constraint assumption guarantee
consistency availability durability isolation atomicity ordering delivery duplicate idempotent
deterministic random sample distribution average median percentile maximum minimum total count
ratio percent second minute hour day week month year period interval window range offset
cursor page size length width height depth level layer tier stage phase step round iteration
attempt operation action activity workflow integration provider consumer producer subscriber
publisher topic partition offset replica broker controller operator administrator developer
user team organization project product platform framework tool utility component plugin
adapter wrapper driver engine backend frontend dashboard console portal interface api sdk cli
liquidity vault position range concentrated fee tier oracle price feed slippage impact route
aggregator bundle jito priority compute unit budget lamport rent exempt associated token metadata
candle volume holder trader portfolio history chart analytics indicator signal alert webhook
upgrade maintenance kubernetes etcd bootstrap machine controlplane worker talosctl patch image
installer factory extension overlay secureboot disk encryption network bond vlan bridge route
""".split()

DOMAIN_TERMS: dict[str, list[str]] = {
    "rust": """cargo rustc crate trait impl borrow lifetime ownership closure iterator Option Result
        unwrap match enum struct Box Rc Arc Mutex RefCell Send Sync async await tokio serde clippy rustfmt
        macro derive generic monomorphization unsafe FFI slice Vec HashMap String str lint edition""".split(),
    "cilium": """cilium hubble eBPF endpoint identity CiliumNetworkPolicy ClusterMesh kube-proxy
        replacement IPAM datapath XDP egress gateway BGP L7 Envoy encryption WireGuard IPsec agent
        operator CNI conntrack service map tunnel VXLAN Geneve overlay native-routing""".split(),
    "talos": """talos talosctl machineconfig controlplane worker etcd kubelet bootstrap apply-config
        upgrade reset maintenance-mode SecureBoot UKI installer imager extension siderolabs omni
        KubeSpan discovery patch sysctl kernel-args disk partition STATE EPHEMERAL""".split(),
    "ebpf": """eBPF BPF verifier helper map kprobe uprobe tracepoint XDP tc cgroup ringbuf perf
        libbpf CO-RE BTF bpftool bpftrace JIT bytecode program loader pinning LRU hash-map array
        percpu tail-call kfunc fentry fexit LSM sockmap""".split(),
    "solana": """solana lamport SOL validator slot epoch leader gossip turbine PoH rent account
        program PDA CPI instruction transaction signature blockhash commitment finalized confirmed
        SPL token mint ATA anchor IDL RPC websocket compute-unit priority-fee sysvar""".split(),
    "jupiter": """jupiter swap quote route aggregator slippage priority-fee limit-order DCA perps
        JUP ultra trigger referral platform-fee token-ledger versioned-transaction lookup-table
        price-api token-list strict verified jupiterapi""".split(),
    "meteora": """meteora DLMM bin liquidity pool vault dynamic-AMM fee-tier LP position
        rebalance strategy bin-step active-bin concentrated farming rewards stake alpha-vault
        memecoin launch-pool""".split(),
    "raydium": """raydium AMM CLMM CPMM pool liquidity LP farm staking AcceleRaytor OpenBook
        market tick position range fee-tier swap router RAY launchlab bonding-curve migration""".split(),
    "birdeye": """birdeye price OHLCV token overview security holder trader wallet portfolio
        multi-chain x-chain websocket trending gainers losers volume liquidity market-cap
        api-key rate-limit""".split(),
    "jupyter": """jupyter notebook kernel ipykernel cell magic widget ipywidgets JupyterLab
        nbconvert nbformat matplotlib pandas numpy DataFrame plot display kernelspec extension
        server voila papermill""".split(),
    "ietf_rfc": """MUST SHOULD MAY REQUIRED OPTIONAL RECOMMENDED ABNF octet header field
        intermediary origin proxy cache freshness validator ETag Last-Modified conditional
        request method idempotent safe URI authority scheme TLS handshake stream""".split(),
}

IDENT_PARTS = """get set add remove update create delete list fetch load save parse build handle
    process compute resolve validate check init config account token pool price route order
    swap state cache buffer reader writer client server request response event handler map key
    value index count size len max min total rate limit fee slot block tx sig hash addr port
    node peer policy rule label spec status meta info data payload frame stream conn session""".split()

LANGUAGES = ["rust", "python", "typescript", "bash", "yaml", "json", "go", "c", "toml", "sql"]
