// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Federation: the rules of one federated-learning consortium.
/// @notice The contract, not the aggregator, decides who may contribute, which round is
/// open, which updates are in and which global model is accepted. It stores digests and
/// small integers only; every state change emits an event, and the event log is the
/// audit trail a verifier replays.
/// @dev A content identifier (CIDv1, sha2-256) is carried as its 32-byte digest plus its
/// multicodec (0x55 raw, 0x70 dag-pb). Sets of members are bitmaps over member indices.
contract Federation {
    uint8 public constant ROLE_PARTICIPANT = 1;
    uint8 public constant ROLE_AGGREGATOR = 2;
    uint8 public constant ROLE_VALIDATOR = 4;

    enum RoundStatus {
        None,
        Open,
        Finalized,
        Accepted,
        Failed
    }

    /// Why a commitment was refused; relayed batches skip refused entries and emit this.
    enum Refusal {
        None,
        NotParticipant,
        RoundNotOpen,
        WrongAttempt,
        DeadlinePassed,
        AlreadyCommitted,
        BadSignature,
        NoExamples
    }

    /// Why the aggregator left a committed update out of the aggregate; recorded by
    /// `finalize` so that every commitment is accounted for and a left-out update is visible.
    enum Exclusion {
        None,
        /// the blob could not be fetched intact from the content store, after retries
        Unavailable,
        /// authentication failed: tampered or truncated, or not sealed for the recipients
        Undecryptable,
        /// the header disagrees with the commitment (federation, chain, round, sender, examples)
        WrongHeader,
        /// the tensors' names, dtypes or shapes differ from the round's base model
        WrongShape,
        /// the tensors hold NaN or infinite values
        NonFinite
    }

    struct Member {
        uint32 index;
        uint8 roles;
        bool active;
        bytes32 x25519;
    }

    struct Round {
        RoundStatus status;
        uint32 attempt;
        uint64 deadline;
        uint32 commitments;
        uint32 included;
        uint32 attestations;
        uint32 baseCodec;
        uint32 globalCodec;
        /// the block that opened this attempt: where a reader starts scanning its events
        uint64 openedBlock;
        bytes32 baseDigest;
        bytes32 globalDigest;
        /// keccak chain over the accepted commitments, in order: lets a verifier prove that
        /// the Committed events it read are complete and unaltered.
        bytes32 commitmentLog;
    }

    /// A participant's commitment to one attempt of one round, signed off-chain
    /// (EIP-712) and relayed by anyone. The round and attempt are the batch's. The
    /// signature is in EIP-2098 compact form (r, then yParity and s packed in vs).
    struct SignedCommitment {
        address participant;
        bytes32 digest;
        uint32 codec;
        uint64 examples;
        bytes32 r;
        bytes32 vs;
    }

    /// A committed update the aggregator leaves out of the aggregate, and why.
    struct ExcludedUpdate {
        address participant;
        Exclusion reason;
    }

    bytes32 public constant COMMITMENT_TYPEHASH = keccak256(
        "Commitment(uint64 round,uint32 attempt,bytes32 digest,uint32 codec,uint64 examples)"
    );
    bytes32 private constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 private constant NAME_HASH = keccak256("fl-chain Federation");
    bytes32 private constant VERSION_HASH = keccak256("1");
    uint256 private constant HALF_CURVE_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    bytes32 public immutable taskHash;
    uint32 public immutable aggregationRule;
    uint32 public immutable quorum;
    uint64 public immutable roundDuration;
    uint32 public immutable attestationThreshold;
    uint256 private immutable deployedChainId;
    bytes32 private immutable deployedDomainSeparator;

    address public admin;
    address public aggregator;
    uint64 public latestAcceptedRound;

    mapping(address => Member) private members;
    address[] private memberAddresses;
    mapping(uint64 => Round) private rounds;
    /// (round << 32 | attempt) => bitmap word => bits of member indices
    mapping(uint256 => mapping(uint256 => uint256)) private committedBits;
    mapping(uint256 => mapping(uint256 => uint256)) private includedBits;
    mapping(uint256 => mapping(address => bool)) private attested;

    event FederationCreated(
        bytes32 taskHash,
        uint32 aggregationRule,
        uint32 quorum,
        uint64 roundDuration,
        uint32 attestationThreshold,
        address admin,
        bytes32 genesisDigest,
        uint32 genesisCodec
    );
    event AdminChanged(address indexed previous, address indexed next);
    event MemberAdded(address indexed member, uint32 index, uint8 roles, bytes32 x25519);
    event MemberRemoved(address indexed member, uint32 index);
    event AggregatorChanged(address indexed previous, address indexed next);
    event RoundOpened(
        uint64 indexed round, uint32 attempt, bytes32 baseDigest, uint32 baseCodec, uint64 deadline
    );
    event Committed(
        uint64 indexed round, address indexed participant, bytes32 digest, uint32 codec, uint64 examples
    );
    event CommitmentRefused(uint64 indexed round, address indexed participant, Refusal reason);
    event Excluded(uint64 indexed round, address indexed participant, Exclusion reason);
    event Finalized(
        uint64 indexed round, uint32 attempt, bytes32 digest, uint32 codec, uint256[] included
    );
    event Attested(
        uint64 indexed round, address indexed validator, bytes32 digest, uint32 codec, bool agrees
    );
    event Accepted(uint64 indexed round, bytes32 digest, uint32 codec);
    event RoundFailed(uint64 indexed round, uint32 attempt, RoundStatus atStatus);

    error InvalidParameters();
    error NotAdmin(address caller);
    error NotAggregator(address caller);
    error NotValidator(address caller);
    error MemberExists(address member);
    error UnknownMember(address member);
    error LacksRole(address member, uint8 role);
    error LengthMismatch();
    error UnexpectedRound(uint64 given, uint64 expected);
    error RoundInProgress(uint64 round, RoundStatus status);
    error BaseNotAccepted(uint64 round, bytes32 givenDigest, bytes32 acceptedDigest);
    error Refused(uint64 round, address participant, Refusal reason);
    error RoundNotOpen(uint64 round, RoundStatus status);
    error NotCommitted(uint64 round, uint256 memberIndex);
    error BelowQuorum(uint64 round, uint256 included, uint256 quorum);
    error ExclusionOutOfOrder(uint64 round, address participant);
    error ExclusionWithoutReason(uint64 round, address participant);
    error ExcludedNotCommitted(uint64 round, address participant);
    error ExcludedAndIncluded(uint64 round, address participant);
    error CommitmentsUnaccounted(uint64 round, uint256 commitments, uint256 included, uint256 excluded);
    error RoundNotFinalized(uint64 round, RoundStatus status);
    error AlreadyAttested(uint64 round, address validator);
    error CannotFail(uint64 round, RoundStatus status, uint64 notBefore);

    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        _;
    }

    modifier onlyAggregator() {
        if (msg.sender != aggregator || aggregator == address(0)) revert NotAggregator(msg.sender);
        _;
    }

    constructor(
        bytes32 taskHash_,
        uint32 aggregationRule_,
        uint32 quorum_,
        uint64 roundDuration_,
        uint32 attestationThreshold_,
        address admin_,
        bytes32 genesisDigest,
        uint32 genesisCodec
    ) {
        if (quorum_ == 0 || roundDuration_ == 0 || attestationThreshold_ == 0 || admin_ == address(0)) {
            revert InvalidParameters();
        }
        taskHash = taskHash_;
        aggregationRule = aggregationRule_;
        quorum = quorum_;
        roundDuration = roundDuration_;
        attestationThreshold = attestationThreshold_;
        admin = admin_;
        deployedChainId = block.chainid;
        deployedDomainSeparator = _buildDomainSeparator();
        Round storage genesis = rounds[0];
        genesis.status = RoundStatus.Accepted;
        genesis.globalDigest = genesisDigest;
        genesis.globalCodec = genesisCodec;
        emit FederationCreated(
            taskHash_, aggregationRule_, quorum_, roundDuration_, attestationThreshold_, admin_,
            genesisDigest, genesisCodec
        );
    }

    // ---------------------------------------------------------------- governance

    function transferAdmin(address next) external onlyAdmin {
        if (next == address(0)) revert InvalidParameters();
        emit AdminChanged(admin, next);
        admin = next;
    }

    function addMember(address member, bytes32 x25519, uint8 roles) external onlyAdmin {
        _addMember(member, x25519, roles);
    }

    function addMembers(address[] calldata member, bytes32[] calldata x25519, uint8[] calldata roles)
        external
        onlyAdmin
    {
        if (member.length != x25519.length || member.length != roles.length) revert LengthMismatch();
        for (uint256 i = 0; i < member.length; ++i) {
            _addMember(member[i], x25519[i], roles[i]);
        }
    }

    function removeMember(address member) external onlyAdmin {
        Member storage m = members[member];
        if (!m.active) revert UnknownMember(member);
        m.active = false;
        emit MemberRemoved(member, m.index);
        if (member == aggregator) {
            emit AggregatorChanged(member, address(0));
            aggregator = address(0);
        }
    }

    function setAggregator(address next) external onlyAdmin {
        Member storage m = members[next];
        if (!m.active) revert UnknownMember(next);
        if (m.roles & ROLE_AGGREGATOR == 0) revert LacksRole(next, ROLE_AGGREGATOR);
        emit AggregatorChanged(aggregator, next);
        aggregator = next;
    }

    /// Adding a removed member again reactivates it at its old index, so bitmaps stay valid.
    function _addMember(address member, bytes32 x25519, uint8 roles) private {
        if (member == address(0) || roles == 0 || roles > 7) revert InvalidParameters();
        Member storage m = members[member];
        if (m.active) revert MemberExists(member);
        if (m.roles == 0) {
            m.index = uint32(memberAddresses.length);
            memberAddresses.push(member);
        }
        m.roles = roles;
        m.active = true;
        m.x25519 = x25519;
        emit MemberAdded(member, m.index, roles, x25519);
    }

    // ---------------------------------------------------------------- rounds

    /// Opens `round` on the latest accepted global model. A failed round is reopened as a
    /// new attempt of the same round number.
    function openRound(uint64 round, bytes32 baseDigest, uint32 baseCodec) external onlyAggregator {
        uint64 expected = latestAcceptedRound + 1;
        if (round != expected) {
            Round storage pending = rounds[expected];
            if (pending.status == RoundStatus.Open || pending.status == RoundStatus.Finalized) {
                revert RoundInProgress(expected, pending.status);
            }
            revert UnexpectedRound(round, expected);
        }
        Round storage rd = rounds[round];
        if (rd.status == RoundStatus.Open || rd.status == RoundStatus.Finalized) {
            revert RoundInProgress(round, rd.status);
        }
        Round storage base = rounds[latestAcceptedRound];
        if (base.globalDigest != baseDigest || base.globalCodec != baseCodec) {
            revert BaseNotAccepted(round, baseDigest, base.globalDigest);
        }
        uint32 attempt = rd.attempt + 1;
        uint64 deadline = uint64(block.timestamp) + roundDuration;
        rounds[round] = Round({
            status: RoundStatus.Open,
            attempt: attempt,
            deadline: deadline,
            commitments: 0,
            included: 0,
            attestations: 0,
            baseCodec: baseCodec,
            globalCodec: 0,
            openedBlock: uint64(block.number),
            baseDigest: baseDigest,
            globalDigest: bytes32(0),
            commitmentLog: bytes32(0)
        });
        emit RoundOpened(round, attempt, baseDigest, baseCodec, deadline);
    }

    /// A participant commits its own update with its own transaction.
    function commit(uint64 round, bytes32 digest, uint32 codec, uint64 examples) external {
        Round storage rd = rounds[round];
        Refusal refusal = _roundRefusal(rd, rd.attempt);
        if (refusal == Refusal.None) {
            bytes32 log;
            (refusal, log) = _record(round, rd.attempt, rd.commitmentLog, msg.sender, digest, codec, examples);
            if (refusal == Refusal.None) {
                rd.commitmentLog = log;
                rd.commitments += 1;
                return;
            }
        }
        revert Refused(round, msg.sender, refusal);
    }

    /// Anyone relays signed commitments to one attempt of one round in one transaction.
    /// A refused entry does not sink the batch: it is skipped and `CommitmentRefused` says
    /// why. A round that is not open (or past its deadline) refuses the whole batch.
    function commitBatch(uint64 round, uint32 attempt, SignedCommitment[] calldata batch)
        external
        returns (uint256 accepted)
    {
        Round storage rd = rounds[round];
        Refusal roundRefusal = _roundRefusal(rd, attempt);
        if (roundRefusal != Refusal.None) revert Refused(round, address(0), roundRefusal);
        bytes32 separator = domainSeparator();
        bytes32 log = rd.commitmentLog;
        for (uint256 i = 0; i < batch.length; ++i) {
            SignedCommitment calldata c = batch[i];
            Refusal refusal = Refusal.BadSignature;
            bytes32 hash = _commitmentHash(separator, round, attempt, c.digest, c.codec, c.examples);
            if (_recover(hash, c.r, c.vs) == c.participant) {
                (refusal, log) = _record(round, attempt, log, c.participant, c.digest, c.codec, c.examples);
            }
            if (refusal == Refusal.None) {
                ++accepted;
            } else {
                emit CommitmentRefused(round, c.participant, refusal);
            }
        }
        rd.commitmentLog = log;
        rd.commitments += uint32(accepted);
    }

    /// Finalizes the open attempt of `round` with its global model. Every commitment of the
    /// attempt is accounted for: it is either in `included` (a bitmap over member indices)
    /// or in `excluded`, with a reason, in ascending participant address order.
    function finalize(
        uint64 round,
        bytes32 digest,
        uint32 codec,
        uint256[] calldata included,
        ExcludedUpdate[] calldata excluded
    ) external onlyAggregator {
        Round storage rd = rounds[round];
        if (rd.status != RoundStatus.Open) revert RoundNotOpen(round, rd.status);
        uint256 session = _session(round, rd.attempt);
        uint256 count = 0;
        for (uint256 w = 0; w < included.length; ++w) {
            uint256 bits = included[w];
            uint256 stray = bits & ~committedBits[session][w];
            if (stray != 0) revert NotCommitted(round, w * 256 + _lowestBit(stray));
            if (bits != 0) includedBits[session][w] = bits;
            count += _popcount(bits);
        }
        if (excluded.length != 0) _exclude(round, session, excluded);
        if (count + excluded.length != rd.commitments) {
            revert CommitmentsUnaccounted(round, rd.commitments, count, excluded.length);
        }
        if (count < quorum) revert BelowQuorum(round, count, quorum);
        rd.status = RoundStatus.Finalized;
        rd.globalDigest = digest;
        rd.globalCodec = codec;
        rd.included = uint32(count);
        emit Finalized(round, rd.attempt, digest, codec, included);
    }

    function attest(uint64 round, bytes32 digest, uint32 codec) external {
        Member storage m = members[msg.sender];
        if (!m.active || m.roles & ROLE_VALIDATOR == 0) revert NotValidator(msg.sender);
        Round storage rd = rounds[round];
        if (rd.status != RoundStatus.Finalized && rd.status != RoundStatus.Accepted) {
            revert RoundNotFinalized(round, rd.status);
        }
        uint256 session = _session(round, rd.attempt);
        if (attested[session][msg.sender]) revert AlreadyAttested(round, msg.sender);
        attested[session][msg.sender] = true;
        bool agrees = digest == rd.globalDigest && codec == rd.globalCodec;
        emit Attested(round, msg.sender, digest, codec, agrees);
        if (!agrees) return;
        rd.attestations += 1;
        if (rd.status == RoundStatus.Finalized && rd.attestations >= attestationThreshold) {
            rd.status = RoundStatus.Accepted;
            latestAcceptedRound = round;
            emit Accepted(round, digest, codec);
        }
    }

    /// Anyone may fail a round that cannot succeed any more: still open past its deadline
    /// without the quorum, or not accepted within one more round duration after it.
    function failRound(uint64 round) external {
        Round storage rd = rounds[round];
        uint64 notBefore = rd.deadline;
        bool quorumMissed = rd.status == RoundStatus.Open && rd.commitments < quorum;
        if (!quorumMissed) notBefore = rd.deadline + roundDuration;
        bool failable = rd.status == RoundStatus.Open || rd.status == RoundStatus.Finalized;
        if (!failable || block.timestamp <= notBefore) revert CannotFail(round, rd.status, notBefore);
        emit RoundFailed(round, rd.attempt, rd.status);
        rd.status = RoundStatus.Failed;
    }

    // ---------------------------------------------------------------- views

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == deployedChainId ? deployedDomainSeparator : _buildDomainSeparator();
    }

    function memberOf(address member)
        external
        view
        returns (uint32 index, uint8 roles, bool active, bytes32 x25519)
    {
        Member storage m = members[member];
        return (m.index, m.roles, m.active, m.x25519);
    }

    /// Every member ever added (removed ones with `active` false), in index order.
    function memberList() external view returns (address[] memory addresses, Member[] memory details) {
        addresses = memberAddresses;
        details = new Member[](addresses.length);
        for (uint256 i = 0; i < addresses.length; ++i) {
            details[i] = members[addresses[i]];
        }
    }

    function memberCount() external view returns (uint256) {
        return memberAddresses.length;
    }

    function memberAt(uint256 index) external view returns (address) {
        return memberAddresses[index];
    }

    function roundOf(uint64 round) external view returns (Round memory) {
        return rounds[round];
    }

    function committedWord(uint64 round, uint256 word) external view returns (uint256) {
        return committedBits[_session(round, rounds[round].attempt)][word];
    }

    function includedWord(uint64 round, uint256 word) external view returns (uint256) {
        return includedBits[_session(round, rounds[round].attempt)][word];
    }

    function hasAttested(uint64 round, address validator) external view returns (bool) {
        return attested[_session(round, rounds[round].attempt)][validator];
    }

    function latestAccepted() external view returns (uint64 round, bytes32 digest, uint32 codec) {
        Round storage rd = rounds[latestAcceptedRound];
        return (latestAcceptedRound, rd.globalDigest, rd.globalCodec);
    }

    // ---------------------------------------------------------------- internals

    /// Checks and records the exclusions of a finalizing attempt. Ascending addresses rule
    /// out duplicates without storage; with the count check in `finalize`, every commitment
    /// is then either included or excluded, never both and never neither.
    function _exclude(uint64 round, uint256 session, ExcludedUpdate[] calldata excluded) private {
        address previous = address(0);
        for (uint256 i = 0; i < excluded.length; ++i) {
            address participant = excluded[i].participant;
            Exclusion reason = excluded[i].reason;
            if (participant <= previous) revert ExclusionOutOfOrder(round, participant);
            previous = participant;
            if (reason == Exclusion.None) revert ExclusionWithoutReason(round, participant);
            Member storage m = members[participant];
            uint256 word = m.index >> 8;
            uint256 bit = uint256(1) << (m.index & 255);
            if (m.roles == 0 || committedBits[session][word] & bit == 0) {
                revert ExcludedNotCommitted(round, participant);
            }
            if (includedBits[session][word] & bit != 0) revert ExcludedAndIncluded(round, participant);
            emit Excluded(round, participant, reason);
        }
    }

    function _roundRefusal(Round storage rd, uint32 attempt) private view returns (Refusal) {
        if (rd.status != RoundStatus.Open) return Refusal.RoundNotOpen;
        if (attempt != rd.attempt) return Refusal.WrongAttempt;
        if (block.timestamp > rd.deadline) return Refusal.DeadlinePassed;
        return Refusal.None;
    }

    /// Marks `participant` as committed and extends the commitment log; the caller
    /// stores the log and the count (once per batch, not once per entry).
    function _record(
        uint64 round,
        uint32 attempt,
        bytes32 log,
        address participant,
        bytes32 digest,
        uint32 codec,
        uint64 examples
    ) private returns (Refusal, bytes32) {
        Member storage m = members[participant];
        if (!m.active || m.roles & ROLE_PARTICIPANT == 0) return (Refusal.NotParticipant, log);
        if (examples == 0) return (Refusal.NoExamples, log);
        mapping(uint256 => uint256) storage bitmap = committedBits[_session(round, attempt)];
        uint256 word = m.index >> 8;
        uint256 bit = uint256(1) << (m.index & 255);
        uint256 bits = bitmap[word];
        if (bits & bit != 0) return (Refusal.AlreadyCommitted, log);
        bitmap[word] = bits | bit;
        emit Committed(round, participant, digest, codec, examples);
        return (Refusal.None, _extendLog(log, participant, digest, codec, examples));
    }

    /// keccak256(abi.encode(log, participant, digest, codec, examples)), in scratch memory
    /// so that a long batch does not grow memory.
    function _extendLog(bytes32 log, address participant, bytes32 digest, uint32 codec, uint64 examples)
        private
        pure
        returns (bytes32 next)
    {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, log)
            mstore(add(ptr, 0x20), participant)
            mstore(add(ptr, 0x40), digest)
            mstore(add(ptr, 0x60), codec)
            mstore(add(ptr, 0x80), examples)
            next := keccak256(ptr, 0xa0)
        }
    }

    /// The EIP-712 digest of a Commitment, computed in scratch memory.
    function _commitmentHash(
        bytes32 separator,
        uint64 round,
        uint32 attempt,
        bytes32 digest,
        uint32 codec,
        uint64 examples
    ) private pure returns (bytes32 hash) {
        bytes32 typehash = COMMITMENT_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            mstore(add(ptr, 0x20), round)
            mstore(add(ptr, 0x40), attempt)
            mstore(add(ptr, 0x60), digest)
            mstore(add(ptr, 0x80), codec)
            mstore(add(ptr, 0xa0), examples)
            let structHash := keccak256(ptr, 0xc0)
            mstore(ptr, 0x1901000000000000000000000000000000000000000000000000000000000000)
            mstore(add(ptr, 0x02), separator)
            mstore(add(ptr, 0x22), structHash)
            hash := keccak256(ptr, 0x42)
        }
    }

    /// EIP-2098 compact signature recovery; high-s (malleable) signatures are rejected.
    function _recover(bytes32 digest, bytes32 r, bytes32 vs) private pure returns (address) {
        bytes32 s = vs & bytes32(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff);
        if (uint256(s) > HALF_CURVE_ORDER) return address(0);
        uint8 v = uint8((uint256(vs) >> 255) + 27);
        return ecrecover(digest, v, r, s);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _session(uint64 round, uint32 attempt) private pure returns (uint256) {
        return (uint256(round) << 32) | attempt;
    }

    function _popcount(uint256 bits) private pure returns (uint256 count) {
        while (bits != 0) {
            bits &= bits - 1;
            ++count;
        }
    }

    function _lowestBit(uint256 bits) private pure returns (uint256 index) {
        while (bits & 1 == 0) {
            bits >>= 1;
            ++index;
        }
    }
}
