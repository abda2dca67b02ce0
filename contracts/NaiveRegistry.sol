// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title NaiveRegistry: the design fl-chain is measured against.
/// @notice One transaction per participant per round that stores the update's CID as a
/// string, with its sender and number of examples: what blockchain-FL prototypes commonly
/// do. Only used by the gas benchmark.
contract NaiveRegistry {
    struct Update {
        address participant;
        string cid;
        uint256 examples;
    }

    mapping(uint256 => Update[]) public updates;

    event UpdateSubmitted(uint256 indexed round, address indexed participant, string cid, uint256 examples);

    function submit(uint256 round, string calldata cid, uint256 examples) external {
        updates[round].push(Update(msg.sender, cid, examples));
        emit UpdateSubmitted(round, msg.sender, cid, examples);
    }
}
