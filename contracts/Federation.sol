// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Federation: the rules of one federated-learning consortium.
/// @notice The contract, not the aggregator, decides who may contribute, which round is
/// open, which updates are in and which global model is accepted. It stores digests and
/// small integers only; every state change emits an event, and the event log is the
/// audit trail a verifier replays.
/// @dev A content identifier (CIDv1, sha2-256) is carried as its 32-byte digest plus its
/// multicodec (0x55 raw, 0x70 dag-pb). Sets of members are bitmaps over member indices.
/// Every role may be malicious: a participant's weight is capped at admission, the
/// aggregator must account for every commitment it saw, only validators frozen when a
/// round opened (and drawn for its committee) attest it, no member both aggregates and
/// validates, and one dissent blocks acceptance.
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

    /// Why a signed commitment was refused; relayed batches skip refused entries and emit this.
    enum Refusal {
        None,
        NotParticipant,
        RoundNotOpen,
        WrongAttempt,
        DeadlinePassed,
        AlreadyCommitted,
        BadSignature,
        NoExamples,
        TooManyExamples
    }

    /// Why a committed update is not in the aggregate; recorded by `finalize` so that every
    /// commitment is accounted for and a left-out update is visible.
    enum Exclusion {
        None,
        /// the blob could not be fetched intact from the content store, after retries
        Unavailable,
        /// authentication failed: tampered, truncated, not sealed for the recipients, or
        /// sealed differently for different recipients
        Undecryptable,
        /// the header disagrees with the commitment (federation, chain, round, sender, examples)
        WrongHeader,
        /// the tensors' names, dtypes or shapes differ from the round's base model, or do not decode
        WrongShape,
        /// the tensors hold NaN or infinite values
        NonFinite,
        /// the update is farther from the base model than the federation's norm bound
        OutOfBounds,
        /// committed after the aggregator read the round's commitments (set by the contract)
        Late,
        /// farther from the round's coordinate-wise median update than the federation's
        /// outlier test allows (its factor is the last word of the rule's parameters)
        Outlier
    }

    /// What is fixed at deployment.
    struct Parameters {
        bytes32 taskHash;
        uint32 aggregationRule;
        uint32 quorum;
        uint64 roundDuration;
        uint32 attestationThreshold;
        /// validators drawn per finalized attempt; 0: every eligible validator
        uint32 committeeSize;
        /// the most examples any member may ever claim in one commitment
        uint64 maxExamples;
        /// IEEE-754 binary64 bits of the largest L2 distance an update may have from its base model
        uint64 updateNormBound;
        /// seconds after opening during which a participant not relayed may still commit
        /// itself and must be accounted for: no attempt finalizes before it unless every
        /// participant committed, and nothing committed within it may be called late
        uint64 commitGrace;
        /// the aggregation rule's parameters, as its code defines them (fl_chain/rules.py):
        /// validators and verifiers read them here, never from anyone's config
        bytes32 ruleParameters;
    }

    struct Member {
        uint32 index;
        uint8 roles;
        bool active;
        /// listed in `validatorList` (once, the first time it held the validator role)
        bool listedValidator;
        /// the block of its latest admission: it validates only rounds opened after it
        uint64 since;
        /// the most examples one of its commitments may claim
        uint64 exampleCap;
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
        /// attestations of another model than the finalized one: any one blocks acceptance
        uint32 dissents;
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
    bytes32 private constant VERSION_HASH = keccak256("2");
    uint256 private constant HALF_CURVE_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    uint64 private constant DOUBLE_EXPONENT = 0x7ff0000000000000;
    uint64 private constant DOUBLE_SIGN = 0x8000000000000000;

    bytes32 public immutable taskHash;
    uint32 public immutable aggregationRule;
    uint32 public immutable quorum;
    uint64 public immutable roundDuration;
    uint32 public immutable attestationThreshold;
    uint32 public immutable committeeSize;
    uint64 public immutable maxExamples;
    uint64 public immutable updateNormBound;
    uint64 public immutable commitGrace;
    bytes32 public immutable ruleParameters;
    uint256 private immutable deployedChainId;
    bytes32 private immutable deployedDomainSeparator;

    address public admin;
    address public aggregator;
    uint64 public latestAcceptedRound;
    /// active members with the participant role: when all of them committed, nobody is left to wait for
    uint32 public activeParticipants;

    mapping(address => Member) private members;
    address[] private memberAddresses;
    address[] private validatorList;
    mapping(uint64 => Round) private rounds;
    /// (round << 32 | attempt) => bitmap word => bits of member indices
    mapping(uint256 => mapping(uint256 => uint256)) private committedBits;
    mapping(uint256 => mapping(uint256 => uint256)) private includedBits;
    mapping(uint256 => mapping(uint256 => uint256)) private committeeBits;
    /// the validators frozen when an attempt opened (active, admitted before, not the
    /// aggregator): only they can be drawn, and removing one later does not silence it
    mapping(uint256 => mapping(uint256 => uint256)) private eligibleBits;
    /// when a member committed, if it was not through the aggregator's own relay
    mapping(uint256 => mapping(uint256 => uint64)) private selfCommitTime;
    mapping(uint256 => mapping(address => bool)) private attested;

    event FederationCreated(Parameters parameters, address admin, bytes32 genesisDigest, uint32 genesisCodec);
    event AdminChanged(address indexed previous, address indexed next);
    event MemberAdded(address indexed member, uint32 index, uint8 roles, bytes32 x25519, uint64 exampleCap);
    event MemberRemoved(address indexed member, uint32 index);
    event AggregatorChanged(address indexed previous, address indexed next);
    event RoundOpened(
        uint64 indexed round, uint32 attempt, bytes32 baseDigest, uint32 baseCodec, uint64 deadline
    );
    event Committed(
        uint64 indexed round, address indexed participant, bytes32 digest, uint32 codec, uint64 examples
    );
    /// A signed commitment refused for a reason its signer answers for.
    event CommitmentRefused(uint64 indexed round, address indexed participant, Refusal reason);
    /// A relayed entry whose signature is not `claimed`'s: it says nothing about `claimed`,
    /// only that someone relayed bytes in its name.
    event UnverifiedEntrySkipped(uint64 indexed round, address claimed);
    event Excluded(uint64 indexed round, address indexed participant, Exclusion reason);
    event Finalized(
        uint64 indexed round, uint32 attempt, bytes32 digest, uint32 codec, uint256[] included, address[] committee
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
    error NotOnCommittee(uint64 round, address validator);
    error MemberExists(address member);
    error UnknownMember(address member);
    error LacksRole(address member, uint8 role);
    error LengthMismatch();
    error WeakX25519Key(address member);
    error RolesConflict(address member);
    error RolesChanged(address member, uint8 before, uint8 requested);
    error ExampleCapAboveMaximum(address member, uint64 cap, uint64 maximum);
    error UnexpectedRound(uint64 given, uint64 expected);
    error RoundInProgress(uint64 round, RoundStatus status);
    error BaseNotAccepted(uint64 round, bytes32 givenDigest, bytes32 acceptedDigest);
    error Refused(uint64 round, address participant, Refusal reason);
    error RoundNotOpen(uint64 round, RoundStatus status);
    error NotCommitted(uint64 round, uint256 memberIndex);
    error ExclusionOutOfOrder(uint64 round, address participant);
    error InvalidExclusionReason(uint64 round, address participant, Exclusion reason);
    error ExcludedNotCommitted(uint64 round, address participant);
    error ExcludedAndIncluded(uint64 round, address participant);
    error CommitmentsUnaccounted(uint64 round, uint256 seen, uint256 included, uint256 excluded);
    error SeenTooMany(uint64 round, uint256 seen, uint256 commitments);
    error CommitWindowOpen(uint64 round, uint64 until);
    error NotLate(uint64 round, address participant);
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

    constructor(Parameters memory parameters, address admin_, bytes32 genesisDigest, uint32 genesisCodec) {
        if (
            parameters.quorum == 0 || parameters.roundDuration == 0 || parameters.attestationThreshold == 0
                || admin_ == address(0) || parameters.maxExamples == 0
                || (parameters.committeeSize != 0 && parameters.committeeSize < parameters.attestationThreshold)
                || !_positiveFinite(parameters.updateNormBound) || parameters.commitGrace >= parameters.roundDuration
        ) {
            revert InvalidParameters();
        }
        taskHash = parameters.taskHash;
        aggregationRule = parameters.aggregationRule;
        quorum = parameters.quorum;
        roundDuration = parameters.roundDuration;
        attestationThreshold = parameters.attestationThreshold;
        committeeSize = parameters.committeeSize;
        maxExamples = parameters.maxExamples;
        updateNormBound = parameters.updateNormBound;
        commitGrace = parameters.commitGrace;
        ruleParameters = parameters.ruleParameters;
        admin = admin_;
        deployedChainId = block.chainid;
        deployedDomainSeparator = _buildDomainSeparator();
        Round storage genesis = rounds[0];
        genesis.status = RoundStatus.Accepted;
        genesis.globalDigest = genesisDigest;
        genesis.globalCodec = genesisCodec;
        emit FederationCreated(parameters, admin_, genesisDigest, genesisCodec);
    }

    // ---------------------------------------------------------------- governance

    function transferAdmin(address next) external onlyAdmin {
        if (next == address(0)) revert InvalidParameters();
        emit AdminChanged(admin, next);
        admin = next;
    }

    /// Admits members; a cap of 0 is the federation's maximum.
    function addMembers(
        address[] calldata member,
        bytes32[] calldata x25519,
        uint8[] calldata roles,
        uint64[] calldata exampleCap
    ) external onlyAdmin {
        if (member.length != x25519.length || member.length != roles.length || member.length != exampleCap.length) {
            revert LengthMismatch();
        }
        for (uint256 i = 0; i < member.length; ++i) {
            _addMember(member[i], x25519[i], roles[i], exampleCap[i]);
        }
    }

    function removeMember(address member) external onlyAdmin {
        Member storage m = members[member];
        if (!m.active) revert UnknownMember(member);
        m.active = false;
        if (m.roles & ROLE_PARTICIPANT != 0) activeParticipants -= 1;
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

    /// Adding a removed member again reactivates it at its old index (with its old roles: an
    /// address never changes what it does), so bitmaps stay valid.
    function _addMember(address member, bytes32 x25519, uint8 roles, uint64 cap) private {
        if (member == address(0) || roles == 0 || roles > 7) revert InvalidParameters();
        if (roles & ROLE_AGGREGATOR != 0 && roles & ROLE_VALIDATOR != 0) revert RolesConflict(member);
        if (_weakX25519(x25519)) revert WeakX25519Key(member);
        uint64 exampleCap = cap == 0 ? maxExamples : cap;
        if (exampleCap > maxExamples) revert ExampleCapAboveMaximum(member, exampleCap, maxExamples);
        Member storage m = members[member];
        if (m.active) revert MemberExists(member);
        // roles are an address's for good: re-admitting a validator as the aggregator (or
        // back) would let it attest a round it finalized
        if (m.roles != 0 && m.roles != roles) revert RolesChanged(member, m.roles, roles);
        if (m.roles == 0) {
            m.index = uint32(memberAddresses.length);
            memberAddresses.push(member);
        }
        if (roles & ROLE_VALIDATOR != 0 && !m.listedValidator) {
            m.listedValidator = true;
            validatorList.push(member);
        }
        m.roles = roles;
        m.active = true;
        if (roles & ROLE_PARTICIPANT != 0) activeParticipants += 1;
        m.since = uint64(block.number);
        m.exampleCap = exampleCap;
        m.x25519 = x25519;
        emit MemberAdded(member, m.index, roles, x25519, exampleCap);
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
            dissents: 0,
            baseDigest: baseDigest,
            globalDigest: bytes32(0),
            commitmentLog: bytes32(0)
        });
        _freezeValidators(_session(round, attempt));
        emit RoundOpened(round, attempt, baseDigest, baseCodec, deadline);
    }

    /// A participant commits its own update with its own transaction: it never depends on
    /// the aggregator relaying it.
    function commit(uint64 round, bytes32 digest, uint32 codec, uint64 examples) external {
        Round storage rd = rounds[round];
        Refusal refusal = _roundRefusal(rd, rd.attempt);
        if (refusal == Refusal.None) {
            bytes32 log;
            (refusal, log) = _record(round, rd.attempt, rd.commitmentLog, msg.sender, digest, codec, examples);
            if (refusal == Refusal.None) {
                rd.commitmentLog = log;
                rd.commitments += 1;
                _stampSelfCommit(round, rd.attempt, msg.sender);
                return;
            }
        }
        revert Refused(round, msg.sender, refusal);
    }

    /// Anyone relays signed commitments to one attempt of one round in one transaction.
    /// A refused entry does not sink the batch: it is skipped and an event says why. A
    /// round that is not open (or past its deadline) refuses the whole batch.
    function commitBatch(uint64 round, uint32 attempt, SignedCommitment[] calldata batch)
        external
        returns (uint256 accepted)
    {
        Round storage rd = rounds[round];
        Refusal roundRefusal = _roundRefusal(rd, attempt);
        if (roundRefusal != Refusal.None) revert Refused(round, address(0), roundRefusal);
        bytes32 separator = domainSeparator();
        bytes32 log = rd.commitmentLog;
        bool byAggregator = msg.sender == aggregator;
        for (uint256 i = 0; i < batch.length; ++i) {
            SignedCommitment calldata c = batch[i];
            bytes32 hash = _commitmentHash(separator, round, attempt, c.digest, c.codec, c.examples);
            if (_recover(hash, c.r, c.vs) != c.participant) {
                emit UnverifiedEntrySkipped(round, c.participant);
                continue;
            }
            Refusal refusal;
            (refusal, log) = _record(round, attempt, log, c.participant, c.digest, c.codec, c.examples);
            if (refusal == Refusal.None) {
                ++accepted;
                if (!byAggregator) _stampSelfCommit(round, attempt, c.participant);
            } else {
                emit CommitmentRefused(round, c.participant, refusal);
            }
        }
        rd.commitmentLog = log;
        rd.commitments += uint32(accepted);
    }

    /// Concludes the open attempt of `round`. The aggregator read the first `seen` of its
    /// commitments (in chain order) and accounts for each: in `included` (a bitmap over
    /// member indices) or in `excluded` with a reason, in ascending address order. Any
    /// commitment after those is excluded here as late. With fewer included than the
    /// quorum the attempt fails; otherwise it is finalized with its global model and its
    /// attestation committee is drawn.
    function finalize(
        uint64 round,
        bytes32 digest,
        uint32 codec,
        uint256[] calldata included,
        ExcludedUpdate[] calldata excluded,
        uint32 seen
    ) external onlyAggregator {
        Round storage rd = rounds[round];
        if (rd.status != RoundStatus.Open) revert RoundNotOpen(round, rd.status);
        if (seen > rd.commitments) revert SeenTooMany(round, seen, rd.commitments);
        uint64 windowEnd = rd.deadline - roundDuration + commitGrace;
        if (block.timestamp < windowEnd && rd.commitments < activeParticipants) revert CommitWindowOpen(round, windowEnd);
        uint256 count = _account(round, rd, included, excluded, seen);
        rd.included = uint32(count);
        if (count < quorum) {
            emit RoundFailed(round, rd.attempt, RoundStatus.Open);
            rd.status = RoundStatus.Failed;
            return;
        }
        rd.status = RoundStatus.Finalized;
        rd.globalDigest = digest;
        rd.globalCodec = codec;
        _announce(round, rd, included);
    }

    /// A committee validator attests the model it re-computed. Agreeing attestations
    /// accept the round at the threshold, unless a committee member dissented first.
    function attest(uint64 round, bytes32 digest, uint32 codec) external {
        Member storage m = members[msg.sender];
        if (m.roles & ROLE_VALIDATOR == 0 || msg.sender == aggregator) revert NotValidator(msg.sender);
        Round storage rd = rounds[round];
        if (rd.status != RoundStatus.Finalized && rd.status != RoundStatus.Accepted) {
            revert RoundNotFinalized(round, rd.status);
        }
        uint256 session = _session(round, rd.attempt);
        if (!_onCommittee(m, session)) revert NotOnCommittee(round, msg.sender);
        if (attested[session][msg.sender]) revert AlreadyAttested(round, msg.sender);
        attested[session][msg.sender] = true;
        bool agrees = digest == rd.globalDigest && codec == rd.globalCodec;
        emit Attested(round, msg.sender, digest, codec, agrees);
        if (!agrees) {
            rd.dissents += 1;
            return;
        }
        rd.attestations += 1;
        if (rd.status == RoundStatus.Finalized && rd.attestations >= attestationThreshold && rd.dissents == 0) {
            rd.status = RoundStatus.Accepted;
            latestAcceptedRound = round;
            emit Accepted(round, digest, codec);
        }
    }

    /// Anyone may fail an attempt that cannot succeed any more: a finalized one a committee
    /// validator dissented from, one still open past its deadline without the quorum, or
    /// one not accepted within one more round duration after its deadline.
    function failRound(uint64 round) external {
        Round storage rd = rounds[round];
        bool failable = rd.status == RoundStatus.Open || rd.status == RoundStatus.Finalized;
        uint64 notBefore = rd.deadline + roundDuration;
        if (rd.status == RoundStatus.Open && rd.commitments < quorum) notBefore = rd.deadline;
        if (rd.status == RoundStatus.Finalized && rd.dissents != 0) notBefore = 0;
        if (!failable || block.timestamp <= notBefore) revert CannotFail(round, rd.status, notBefore);
        emit RoundFailed(round, rd.attempt, rd.status);
        rd.status = RoundStatus.Failed;
    }

    // ---------------------------------------------------------------- views

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == deployedChainId ? deployedDomainSeparator : _buildDomainSeparator();
    }

    function parameters() external view returns (Parameters memory) {
        return Parameters({
            taskHash: taskHash,
            aggregationRule: aggregationRule,
            quorum: quorum,
            roundDuration: roundDuration,
            attestationThreshold: attestationThreshold,
            committeeSize: committeeSize,
            maxExamples: maxExamples,
            updateNormBound: updateNormBound,
            commitGrace: commitGrace,
            ruleParameters: ruleParameters
        });
    }

    function memberOf(address member) external view returns (Member memory) {
        return members[member];
    }

    /// Every member ever added (removed ones with `active` false), in index order.
    function memberList() external view returns (address[] memory addresses, Member[] memory details) {
        addresses = memberAddresses;
        details = new Member[](addresses.length);
        for (uint256 i = 0; i < addresses.length; ++i) {
            details[i] = members[addresses[i]];
        }
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

    /// Whether `validator` may attest the current attempt of `round` (once finalized).
    function isOnCommittee(uint64 round, address validator) external view returns (bool) {
        Round storage rd = rounds[round];
        if (rd.status != RoundStatus.Finalized && rd.status != RoundStatus.Accepted) return false;
        Member storage m = members[validator];
        if (m.roles & ROLE_VALIDATOR == 0 || validator == aggregator) return false;
        return _onCommittee(m, _session(round, rd.attempt));
    }

    /// The validators frozen when the current attempt of `round` opened, as a bitmap word.
    function eligibleWord(uint64 round, uint256 word) external view returns (uint256) {
        return eligibleBits[_session(round, rounds[round].attempt)][word];
    }

    function hasAttested(uint64 round, address validator) external view returns (bool) {
        return attested[_session(round, rounds[round].attempt)][validator];
    }

    function latestAccepted() external view returns (uint64 round, bytes32 digest, uint32 codec) {
        Round storage rd = rounds[latestAcceptedRound];
        return (latestAcceptedRound, rd.globalDigest, rd.globalCodec);
    }

    // ---------------------------------------------------------------- internals

    /// Records the included set and the exclusions of a finalizing attempt; returns how
    /// many are included. Every one of the `seen` commitments must be accounted for.
    function _account(
        uint64 round,
        Round storage rd,
        uint256[] calldata included,
        ExcludedUpdate[] calldata excluded,
        uint32 seen
    ) private returns (uint256 count) {
        uint256 session = _session(round, rd.attempt);
        for (uint256 w = 0; w < included.length; ++w) {
            uint256 bits = included[w];
            uint256 stray = bits & ~committedBits[session][w];
            if (stray != 0) revert NotCommitted(round, w * 256 + _lowestBit(stray));
            if (bits != 0) includedBits[session][w] = bits;
            count += _popcount(bits);
        }
        uint256[] memory excludedWords = _exclude(round, session, excluded);
        if (count + excluded.length != seen) revert CommitmentsUnaccounted(round, seen, count, excluded.length);
        if (seen < rd.commitments) _excludeLate(round, rd, included, excludedWords);
    }

    function _announce(uint64 round, Round storage rd, uint256[] calldata included) private {
        address[] memory committee = _drawCommittee(round, rd);
        emit Finalized(round, rd.attempt, rd.globalDigest, rd.globalCodec, included, committee);
    }

    /// Checks and records the explicit exclusions of a finalizing attempt, and returns them
    /// as a bitmap. Ascending addresses rule out duplicates without storage; with the count
    /// check in `finalize`, every commitment seen is then either included or excluded.
    function _exclude(uint64 round, uint256 session, ExcludedUpdate[] calldata excluded)
        private
        returns (uint256[] memory words)
    {
        words = new uint256[]((memberAddresses.length + 255) >> 8);
        address previous = address(0);
        for (uint256 i = 0; i < excluded.length; ++i) {
            address participant = excluded[i].participant;
            Exclusion reason = excluded[i].reason;
            if (participant <= previous) revert ExclusionOutOfOrder(round, participant);
            previous = participant;
            if (reason == Exclusion.None || reason == Exclusion.Late) {
                revert InvalidExclusionReason(round, participant, reason);
            }
            Member storage m = members[participant];
            uint256 word = m.index >> 8;
            uint256 bit = uint256(1) << (m.index & 255);
            if (m.roles == 0 || committedBits[session][word] & bit == 0) {
                revert ExcludedNotCommitted(round, participant);
            }
            if (includedBits[session][word] & bit != 0) revert ExcludedAndIncluded(round, participant);
            words[word] |= bit;
            emit Excluded(round, participant, reason);
        }
    }

    /// Excludes, as late, every commitment neither included nor explicitly excluded. Only a
    /// member's own commitment after the commit grace can be late: one the aggregator
    /// relayed itself, or one made while participants may still commit themselves, it must
    /// account for.
    function _excludeLate(
        uint64 round,
        Round storage rd,
        uint256[] calldata included,
        uint256[] memory excludedWords
    ) private {
        uint256 session = _session(round, rd.attempt);
        uint64 windowEnd = rd.deadline - roundDuration + commitGrace;
        for (uint256 w = 0; w < excludedWords.length; ++w) {
            uint256 accounted = excludedWords[w] | (w < included.length ? included[w] : 0);
            uint256 late = committedBits[session][w] & ~accounted;
            while (late != 0) {
                uint256 index = w * 256 + _lowestBit(late);
                late &= late - 1;
                uint64 committedAt = selfCommitTime[session][index];
                if (committedAt == 0 || committedAt < windowEnd) revert NotLate(round, memberAddresses[index]);
                emit Excluded(round, memberAddresses[index], Exclusion.Late);
            }
        }
    }

    /// Draws the attempt's committee: the `committeeSize` eligible validators whose
    /// keccak(seed, address) is smallest, for a seed fixed by the chain, the federation,
    /// the attempt and its commitment log, so every EVM re-executing the history draws the
    /// same. With `committeeSize` 0 every eligible validator is on it and nothing is stored.
    function _drawCommittee(uint64 round, Round storage rd) private returns (address[] memory committee) {
        if (committeeSize == 0) return committee;
        uint256 session = _session(round, rd.attempt);
        bytes32 seed = keccak256(abi.encode(block.chainid, address(this), round, rd.attempt, rd.commitmentLog));
        committee = new address[](committeeSize);
        bytes32[] memory scores = new bytes32[](committeeSize);
        uint256 drawn = 0;
        for (uint256 i = 0; i < validatorList.length; ++i) {
            address candidate = validatorList[i];
            if (!_bit(eligibleBits[session], members[candidate].index)) continue;
            bytes32 score = keccak256(abi.encode(seed, candidate));
            if (drawn == committeeSize && score >= scores[drawn - 1]) continue;
            uint256 at = drawn < committeeSize ? drawn++ : drawn - 1;
            while (at > 0 && scores[at - 1] > score) {
                scores[at] = scores[at - 1];
                committee[at] = committee[at - 1];
                --at;
            }
            scores[at] = score;
            committee[at] = candidate;
        }
        assembly ("memory-safe") {
            mstore(committee, drawn)
        }
        for (uint256 i = 0; i < drawn; ++i) {
            uint32 index = members[committee[i]].index;
            committeeBits[session][index >> 8] |= uint256(1) << (index & 255);
        }
    }

    /// Records which validators the opening attempt may draw its committee from.
    function _freezeValidators(uint256 session) private {
        uint256[] memory words = new uint256[]((memberAddresses.length + 255) >> 8);
        for (uint256 i = 0; i < validatorList.length; ++i) {
            address candidate = validatorList[i];
            Member storage m = members[candidate];
            if (m.active && m.roles & ROLE_VALIDATOR != 0 && m.since < block.number && candidate != aggregator) {
                words[m.index >> 8] |= uint256(1) << (m.index & 255);
            }
        }
        for (uint256 w = 0; w < words.length; ++w) {
            if (words[w] != 0) eligibleBits[session][w] = words[w];
        }
    }

    function _onCommittee(Member storage m, uint256 session) private view returns (bool) {
        return _bit(committeeSize == 0 ? eligibleBits[session] : committeeBits[session], m.index);
    }

    function _bit(mapping(uint256 => uint256) storage bits, uint32 index) private view returns (bool) {
        return bits[index >> 8] & (uint256(1) << (index & 255)) != 0;
    }

    /// When a member's commitment reached the chain other than through the aggregator's relay.
    function _stampSelfCommit(uint64 round, uint32 attempt, address participant) private {
        selfCommitTime[_session(round, attempt)][members[participant].index] = uint64(block.timestamp);
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
        if (examples > m.exampleCap) return (Refusal.TooManyExamples, log);
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

    /// Whether an X25519 public key (RFC 7748 wire bytes) is one of the points of small
    /// order, or their non-canonical encodings, that give every sender the same shared
    /// secret: such a key would open nothing and stop participants from sealing for it.
    /// The top bit of the last byte is ignored by X25519, so it is masked first.
    function _weakX25519(bytes32 key) private pure returns (bool) {
        bytes32 k = key & ~bytes32(uint256(0x80));
        return k == bytes32(0)
            || k == 0x0100000000000000000000000000000000000000000000000000000000000000
            || k == 0xe0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800
            || k == 0x5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157
            || k == 0xecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f
            || k == 0xedffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f
            || k == 0xeeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;
    }

    /// A positive, finite IEEE-754 binary64 (not zero, NaN, infinite or negative).
    function _positiveFinite(uint64 bits) private pure returns (bool) {
        return bits != 0 && bits & DOUBLE_SIGN == 0 && bits & DOUBLE_EXPONENT != DOUBLE_EXPONENT;
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
